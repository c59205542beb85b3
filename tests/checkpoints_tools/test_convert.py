"""from-hf / to-hf / verify in one process: exact round trips, the HF output contract, and clear
errors for inputs that cannot convert."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from megatron_infi.checkpoints_tools import from_hf, to_hf
from megatron_infi.checkpoints_tools.verify import verify
from megatron_infi.models.hf_mapping import ConversionError
from megatron_infi.utils import xxh3_file
from tests.checkpoints_tools.tiny_hf import (
    ARCHS,
    assert_bit_identical,
    head_dim,
    read_safetensors,
    write_tiny_hf,
)


def _write_run_json_as_saved(iter_dir, run: dict) -> None:
    """Replace run.json as if the save had written it: checksums.json agrees with the new one."""
    (iter_dir / "run.json").write_text(json.dumps(run))
    sums = json.loads((iter_dir / "checksums.json").read_text())
    sums["files"]["run.json"] = {
        "bytes": (iter_dir / "run.json").stat().st_size,
        "xxh3_64": xxh3_file(iter_dir / "run.json"),
    }
    (iter_dir / "checksums.json").write_text(json.dumps(sums))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{arch: HF dir}: Llama in several safetensors shards with an index, Qwen2 and Mistral in bf16,
    Qwen3 in fp32, single-file."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "llama": write_tiny_hf(root / "llama", "llama", max_shard_size="200KB"),
        "qwen2": write_tiny_hf(root / "qwen2", "qwen2", seed=1, dtype=torch.bfloat16),
        "qwen3": write_tiny_hf(root / "qwen3", "qwen3", seed=2),
        "mistral": write_tiny_hf(root / "mistral", "mistral", seed=3, dtype=torch.bfloat16),
    }


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_round_trip_is_bit_identical_and_loads_in_transformers(tiny, tmp_path, arch):
    from megatron.core import dist_checkpointing
    from transformers import AutoModelForCausalLM

    iter_dir = from_hf.convert(tiny[arch], tmp_path / "mcore")
    meta = dist_checkpointing.load_tensors_metadata(str(iter_dir))
    # The global, layout-independent keys and shapes the trainer's checkpoints use.
    qkv = meta["decoder.layers.self_attention.linear_qkv.weight"]
    assert tuple(qkv.global_shape) == (4, (6 + 2 * 2) * head_dim(arch), 96)
    assert tuple(meta["embedding.word_embeddings.weight"].global_shape) == (1024, 96)
    assert ("output_layer.weight" in meta) == (arch in ("qwen2", "mistral"))
    assert ("decoder.layers.self_attention.linear_qkv.bias" in meta) == (arch == "qwen2")
    q_norm = meta.get("decoder.layers.self_attention.q_layernorm.weight")
    assert (arch == "qwen3") == (q_norm is not None) and (q_norm is None or q_norm.global_shape == (4, 32))
    run = json.loads((iter_dir / "run.json").read_text())
    assert run["weights_only"] and run["config"]["model"]["arch"] == arch

    out = to_hf.export(tmp_path / "mcore", tmp_path / "hf", max_shard_size="300KB")
    assert assert_bit_identical(tiny[arch], out) == len(read_safetensors(tiny[arch]))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in out.glob("model-*.safetensors")}
    assert (out / "generation_config.json").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(model).__name__ == ARCHS[arch][1]
    expected = json.loads((tiny[arch] / "config.json").read_text())
    written = json.loads((out / "config.json").read_text())
    for key in ("vocab_size", "num_key_value_heads", "tie_word_embeddings", "rope_parameters", "dtype"):
        assert written[key] == expected[key], key
    assert written.get("head_dim", 16) == expected.get("head_dim", 16) == head_dim(arch)


# Per architecture, a tensor that only it has: perturbed in the HF model, parity must fail.
ITS_OWN_TENSOR = {
    "qwen2": "model.layers.2.self_attn.v_proj.bias",
    "qwen3": "model.layers.2.self_attn.k_norm.weight",
    "mistral": "model.layers.2.self_attn.o_proj.weight",
}


@pytest.mark.parametrize("arch", sorted(ITS_OWN_TENSOR))
def test_verify_passes_on_a_conversion_and_catches_a_wrong_tensor(tiny, tmp_path, arch):
    """The megatron model (trainer's build, fp32, TP=1) gives HF's logits on the same tokens."""
    from safetensors.torch import load_file, save_file

    from_hf.convert(tiny[arch], tmp_path / "mcore", dtype="fp32")
    report = verify(tmp_path / "mcore", tiny[arch], num_sequences=2, seq_length=32)
    assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
    # Negative control: one tensor of one layer off by 0.05 must be seen.
    broken = tmp_path / "broken"
    shutil.copytree(tiny[arch], broken)
    tensors = load_file(broken / "model.safetensors")
    tensors[ITS_OWN_TENSOR[arch]] += 0.05
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    report = verify(tmp_path / "mcore", broken, num_sequences=2, seq_length=32)
    assert not report["passed"] and report["max_abs_diff"] > 1e-3


def test_missing_shard_fails_before_writing(tiny, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(tiny["llama"], hf)
    (hf / "model-00003-of-00008.safetensors").unlink()
    with pytest.raises(
        ConversionError,
        match=r"model.safetensors.index.json: lists shard\(s\) that are missing: "
        r"model-00003-of-00008.safetensors",
    ):
        from_hf.convert(hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The CLI reports the same message and exits 2.
    assert from_hf.main(["--hf", str(hf), "--out", str(tmp_path / "out")]) == 2


def test_cli_rejects_mismatched_preset_and_unsupported_architecture(tiny, tmp_path, capsys):
    assert (
        from_hf.main(["--hf", str(tiny["llama"]), "--out", str(tmp_path / "a"), "--preset", "llama3.2-1b"])
        == 2
    )
    assert "--preset llama3.2-1b does not match config.json" in capsys.readouterr().err
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    assert from_hf.main(["--hf", str(gpt2), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{gpt2}/config.json: unsupported architecture model_type='gpt2'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Mistral v0.1 / v0.2 attend through a sliding window, which the megatron layer here does not.
    v01 = write_tiny_hf(tmp_path / "mistral_v01", "mistral", sliding_window=4096)
    assert from_hf.main(["--hf", str(v01), "--out", str(tmp_path / "d"), "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"infi convert from-hf: input error: {v01}/config.json: sliding_window: 4096: sliding-window "
        "attention is not supported"
    )
    # A wrong training layout is caught at conversion, naming the field (6 heads do not split over 4 ranks).
    assert from_hf.main(["--hf", str(tiny["llama"]), "--out", str(tmp_path / "c"), "--tp", "4"]) == 2
    assert "parallel.tensor" in capsys.readouterr().err


def test_export_rejects_a_run_json_that_does_not_describe_the_tensors(tiny, tmp_path):
    iter_dir = from_hf.convert(tiny["llama"], tmp_path / "mcore")
    run = json.loads((iter_dir / "run.json").read_text())
    run["config"]["model"]["ffn_hidden_size"] = 192
    _write_run_json_as_saved(iter_dir, run)
    with pytest.raises(
        ConversionError, match=r"linear_fc1.weight has shape \(4, 320, 96\).*implies \(4, 384, 96\)"
    ):
        to_hf.export(tmp_path / "mcore", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    with pytest.raises(Exception, match="iter_0000007"):
        to_hf.export(tmp_path / "mcore", tmp_path / "hf", iteration=7)


def test_export_reads_run_json_with_the_former_qkv_bias_field(tiny, tmp_path):
    """Checkpoints written before q/k/v biases became a fact of the architecture still export."""
    iter_dir = from_hf.convert(tiny["qwen2"], tmp_path / "mcore")
    run = json.loads((iter_dir / "run.json").read_text())
    run["config"]["model"]["qkv_bias"] = True
    _write_run_json_as_saved(iter_dir, run)
    assert assert_bit_identical(tiny["qwen2"], to_hf.export(tmp_path / "mcore", tmp_path / "hf")) > 0
    run["config"]["model"]["qkv_bias"] = False
    _write_run_json_as_saved(iter_dir, run)
    with pytest.raises(ConversionError, match=r"run.json: model.qkv_bias=False contradicts model.arch=qwen2"):
        to_hf.export(tmp_path / "mcore", tmp_path / "hf2")


def test_export_reads_run_json_with_the_former_auto_resume_field(tiny, tmp_path):
    """Checkpoints written before `checkpoint.auto_resume` became `checkpoint.resume` still export."""
    iter_dir = from_hf.convert(tiny["llama"], tmp_path / "mcore")
    run = json.loads((iter_dir / "run.json").read_text())
    run["config"]["checkpoint"]["auto_resume"] = run["config"]["checkpoint"].pop("resume")
    _write_run_json_as_saved(iter_dir, run)
    assert assert_bit_identical(tiny["llama"], to_hf.export(tmp_path / "mcore", tmp_path / "hf")) > 0


def test_export_refuses_to_replace_an_unrelated_dir(tiny, tmp_path):
    from_hf.convert(tiny["llama"], tmp_path / "mcore")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="refusing to replace it"):
        to_hf.export(tmp_path / "mcore", precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConversionError, match="exists and is not empty"):
        from_hf.convert(tiny["llama"], precious)


@pytest.mark.gpu
def test_verify_bf16_on_gpu(tiny, tmp_path):
    """The GPU path: the trainer's device and dtype selection (bf16), judged by the bf16 tolerance."""
    from_hf.convert(tiny["qwen2"], tmp_path / "mcore", dtype="bf16")
    report = verify(tmp_path / "mcore", tiny["qwen2"])
    assert report["device"].startswith("cuda") and report["dtype"] == "bfloat16"
    assert report["passed"], report
