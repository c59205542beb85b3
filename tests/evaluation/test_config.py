"""`infi eval` config mistakes are ConfigErrors naming the field (exit 2), never TypeErrors."""

import pytest

from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.evaluation.config import EvalConfig


def test_eval_model_without_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, None, [f"models=[{{path: {tmp_path}}}]", "benchmarks=[{name: gsm_symbolic}]"])
    assert info.value.field == "models[0].name" and "required" in str(info.value)


@pytest.mark.parametrize(
    "override,field",
    [
        ("code_workers=-1", "code_workers"),
        ("code_timeout_s=.nan", "code_timeout_s"),
        ("pass_k=[0]", "pass_k"),
    ],
)
def test_eval_sizes_are_checked(tmp_path, override, field):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        load_config(
            EvalConfig,
            None,
            [f"models=[{{name: m, path: {tmp_path}}}]", "benchmarks=[{name: gsm_symbolic}]", override],
        )
    assert info.value.field == field, str(info.value)
