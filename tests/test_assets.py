"""The real pretrained model is built offline from the wheel `make setup` fetched, reproducibly, and a
damaged copy is rebuilt rather than trusted."""

from __future__ import annotations

import json
import shutil

import pytest

from megatron_infi import assets
from megatron_infi.utils import sha256_file


@pytest.fixture(scope="module")
def smollm2():
    try:
        return assets.smollm2_dir()
    except assets.AssetError as err:
        pytest.skip(str(err))


def test_smollm2_is_a_plain_llama_with_recorded_hashes(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    record = json.loads((smollm2 / assets.SMOLLM2_RECORD).read_text())
    assert len(record["gguf_sha256"]) == 64
    for name, digest in record["files"].items():
        assert sha256_file(smollm2 / name) == digest["sha256"]
    assert assets.smollm2_dir() == smollm2  # cached: the second call finds it intact


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_copy_is_rebuilt_identically(smollm2, tmp_path, damage):
    copy = shutil.copytree(smollm2, tmp_path / "smollm2")
    weights = copy / "model.safetensors"
    expected = sha256_file(weights)
    if damage == "truncate":
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    else:
        with open(weights, "r+b") as handle:
            handle.seek(1 << 20)
            byte = handle.read(1)
            handle.seek(1 << 20)
            handle.write(bytes([byte[0] ^ 0xFF]))
    assert assets.smollm2_dir(copy) == copy
    assert sha256_file(weights) == expected  # the dequantization is deterministic


def test_missing_wheel_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(assets.sys, "prefix", str(tmp_path))
    with pytest.raises(assets.AssetError, match="make setup"):
        assets.smollm2_dir(tmp_path / "out")
