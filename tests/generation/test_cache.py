"""The backend-independent half of generation: n samples, greedy de-duplication, the resumable cache."""

import json

import pytest

from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.generation import (
    GenerationBackend,
    GenerationConfig,
    SamplingParams,
    build_backend,
    select_backend,
)
from megatron_infi.generation.cache import GenerationCache


class EchoBackend(GenerationBackend):
    """Deterministic stand-in: the completion names its input, sample index and seed."""

    name = "echo"

    def __init__(self, cfg, model="echo-1", fail_on_call=None):
        super().__init__(cfg)
        self.model = model
        self.calls = []
        self.fail_on_call = fail_on_call
        self.show_progress = False

    @property
    def model_id(self):
        return self.model

    def _complete(self, kind, items, sample_indices, params):
        self.calls.append(list(zip([json.dumps(i) for i in items], sample_indices, strict=True)))
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("simulated crash")
        return [
            f"{kind}:{item}:{idx}:{params.seed}:STOP tail"
            for item, idx in zip(items, sample_indices, strict=True)
        ]


def cfg(tmp_path, **kw):
    return GenerationConfig(
        backend="hf", model="unused", batch_size=2, cache_dir=str(tmp_path / "cache"), **kw
    )


def test_n_samples_and_stop_strings(tmp_path):
    backend = EchoBackend(cfg(tmp_path))
    out = backend.generate(["a", "b"], SamplingParams(n=3, temperature=0.7, seed=5, stop=["STOP"]))
    assert out == [[f"text:{p}:{i}:5:" for i in range(3)] for p in "ab"]


def test_greedy_generates_once_per_prompt(tmp_path):
    backend = EchoBackend(cfg(tmp_path))
    out = backend.generate(["a", "b", "c"], SamplingParams(n=4))
    assert [len(set(samples)) for samples in out] == [1, 1, 1]
    assert sum(len(c) for c in backend.calls) == 3


def test_cache_resumes_and_extends_samples(tmp_path):
    params = SamplingParams(n=2, temperature=1.0)
    first = EchoBackend(cfg(tmp_path))
    first.enable_cache(tmp_path / "cache")
    before = first.chat([[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]], params)

    again = EchoBackend(cfg(tmp_path))
    again.enable_cache(tmp_path / "cache")
    assert (
        again.chat([[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]], params)
        == before
    )
    assert again.calls == []
    # more samples: only the new sample indices are generated
    params.n = 3
    more = again.chat([[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]], params)
    assert [m[:2] for m in more] == before
    assert sorted(idx for call in again.calls for _, idx in call) == [2, 2]


def test_cache_key_separates_models_params_and_kinds(tmp_path):
    backend = EchoBackend(cfg(tmp_path))
    backend.enable_cache(tmp_path / "cache")
    backend.generate(["a"], SamplingParams(temperature=0.5, seed=1))
    for changed in (
        SamplingParams(temperature=0.5, seed=2),
        SamplingParams(temperature=0.6, seed=1),
        SamplingParams(temperature=0.5, seed=1, max_new_tokens=9),
    ):
        backend.calls.clear()
        backend.generate(["a"], changed)
        assert len(backend.calls) == 1
    backend.calls.clear()
    backend.chat([[{"role": "user", "content": "a"}]], SamplingParams(temperature=0.5, seed=1))
    assert len(backend.calls) == 1
    other = EchoBackend(cfg(tmp_path), model="echo-2")
    other.enable_cache(tmp_path / "cache")
    other.generate(["a"], SamplingParams(temperature=0.5, seed=1))
    assert len(other.calls) == 1


def test_crash_mid_run_keeps_finished_batches(tmp_path):
    prompts = ["p1", "p2", "p3", "p4", "p5"]
    crashing = EchoBackend(cfg(tmp_path), fail_on_call=2)
    crashing.enable_cache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.generate(prompts, SamplingParams())
    resumed = EchoBackend(cfg(tmp_path))
    resumed.enable_cache(tmp_path / "cache")
    out = resumed.generate(prompts, SamplingParams())
    assert [o[0] for o in out] == [f"text:{p}:0:0:STOP tail" for p in prompts]
    assert sum(len(c) for c in resumed.calls) == 3  # batch 1 (2 prompts) came from the cache


def test_line_cut_by_a_crash_is_skipped_and_isolated(tmp_path):
    cache = GenerationCache(tmp_path, "m")
    cache.put_many([("k1", "one"), ("k2", "two")])
    with open(cache.path, "ab") as handle:
        handle.write(b'{"key": "k3", "te')  # the process died here
    reloaded = GenerationCache(tmp_path, "m")
    assert (reloaded.get("k1"), reloaded.get("k2"), reloaded.get("k3")) == ("one", "two", None)
    assert reloaded.skipped.counts == {"malformed-json": 1}
    reloaded.put_many([("k4", "four")])
    final = GenerationCache(tmp_path, "m")
    assert final.get("k4") == "four" and len(final) == 3


def test_backend_selection_and_config_errors(tmp_path):
    assert (
        select_backend(GenerationConfig(backend="auto", model="m", base_url="http://127.0.0.1:1/v1"))
        == "openai"
    )
    assert select_backend(GenerationConfig(backend="hf", model="m")) == "hf"
    (tmp_path / "cfg.yaml").write_text("backend: openai\nmodel: served\n")
    with pytest.raises(ConfigError, match="^base_url"):
        load_config(GenerationConfig, tmp_path / "cfg.yaml")
    # the model dir is checked when a backend is built, not at config load (a recipe's later stage
    # names a model an earlier stage will write)
    cfg = load_config(GenerationConfig, None, ["backend=hf", f"model={tmp_path}"])
    with pytest.raises(ConfigError, match="^model: .*not an HF model dir"):
        build_backend(cfg)
    with pytest.raises(ConfigError, match="^backend: must be one of"):
        load_config(GenerationConfig, None, ["backend=tgi", "model=x"])
    with pytest.raises(ConfigError, match="^top_p"):
        SamplingParams(top_p=0).validate()
