import os

import pytest

# Tests never reach a hub, and keep caches out of ~/.cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip_gpu)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that runs model-written code skips, with the sandbox's one-line reason, on a host
    where bubblewrap cannot run (CI installs it)."""
    from megatron_infi.scoring.code import SandboxUnavailableError

    try:
        return (yield)
    except SandboxUnavailableError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tmp_path_factory):
    from megatron_infi.data.tokenizer import build_llama3_tokenizer

    return build_llama3_tokenizer(tmp_path_factory.mktemp("tokenizer") / "llama3")


@pytest.fixture(scope="session")
def boolq_corpus(tmp_path_factory, llama3_tokenizer_dir):
    """(tokenizer dir, indexed-dataset prefix) of 400 real BoolQ passages."""
    from tests.corpus import write_indexed_corpus

    return write_indexed_corpus(tmp_path_factory.mktemp("corpus"), llama3_tokenizer_dir)


@pytest.fixture(scope="session")
def megatron_patches():
    """What every entry point that runs megatron-core does first (megatron_infi/training/patches.py);
    the test folders that start megatron-core in-process use it from their conftest.py."""
    from megatron_infi.training import patches

    return patches.apply()
