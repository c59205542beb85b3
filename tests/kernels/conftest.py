import pytest


@pytest.fixture(autouse=True, scope="session")
def _megatron_patches(megatron_patches):
    """These tests start megatron-core in-process, as the entry points do after applying the patches."""
