import pytest

from megatron_infi.data.tokenizer import build_llama3_tokenizer
from tests.generation.tiny_model import build_tiny_llama


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tmp_path_factory):
    return build_llama3_tokenizer(tmp_path_factory.mktemp("tokenizer") / "llama3")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, llama3_tokenizer_dir):
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny", llama3_tokenizer_dir)
