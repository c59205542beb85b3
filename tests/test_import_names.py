"""Our code has one import name, `megatron_infi`; the repository's kernels/, data_processing/ and
checkpoints_tools/ folders are its sub-packages. With Hugging Face's `kernels` package installed
(the real wheel, fetched by `make setup`), `import kernels` is theirs from any working directory,
ours is `megatron_infi.kernels`, and transformers' package check finds theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from megatron_infi import assets

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, kernels
import megatron_infi.kernels.rmsnorm as ours
import megatron_infi.data_processing.steps.tokenize
import megatron_infi.checkpoints_tools.from_hf
from transformers.utils import import_utils
print(json.dumps({
    "theirs": kernels.__file__,
    "ours": ours.__file__,
    "transformers_sees": list(import_utils._is_package_available("kernels", return_version=True)),
}))
"""


@pytest.fixture(scope="module")
def hf_kernels_site(tmp_path_factory) -> Path:
    try:
        wheel = assets.fetched_wheel("kernels")
    except assets.AssetError as err:
        pytest.skip(str(err))
    site = tmp_path_factory.mktemp("hf_kernels")
    with zipfile.ZipFile(wheel) as archive:  # a wheel unpacked on sys.path is an installed package
        archive.extractall(site)
    return site


@pytest.mark.parametrize("cwd", ["repo_root", "elsewhere"])
def test_hf_kernels_and_ours_both_import(hf_kernels_site, tmp_path, cwd):
    env = {**os.environ, "PYTHONPATH": str(hf_kernels_site)}
    where = REPO if cwd == "repo_root" else tmp_path
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=where, env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["theirs"]).is_relative_to(hf_kernels_site)
    assert Path(found["ours"]).resolve() == REPO / "kernels" / "rmsnorm.py"
    version = next(hf_kernels_site.glob("kernels-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    assert found["transformers_sees"] == [True, version]
