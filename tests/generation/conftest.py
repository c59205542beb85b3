import pytest

from tests.generation.tiny_model import shared_tiny_llama


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tmp_path_factory):
    return shared_tiny_llama(tmp_path_factory.getbasetemp())[0]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return shared_tiny_llama(tmp_path_factory.getbasetemp())[1]
