"""vLLM backend (GPU only). Run on a GPU machine:
python -m pytest -q -m gpu tests/generation/test_vllm_backend.py
"""

import importlib.util

import pytest
import torch

from megatron_infi.generation import GenerationConfig, SamplingParams, build_backend

pytestmark = pytest.mark.gpu

needs_vllm = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None, reason="needs CUDA and vllm"
)

PROMPTS = ["The capital of France is", "def add(a, b):\n    return", "1, 2, 3, 4,", "Once upon a time"]


@needs_vllm
def test_vllm_matches_hf_greedy_and_keeps_per_sample_seeds(tiny_llama_dir):
    vllm_backend = build_backend(
        GenerationConfig(model=str(tiny_llama_dir), dtype="float32", gpu_memory_utilization=0.3)
    )
    assert vllm_backend.name == "vllm"  # auto on a GPU with vllm installed
    greedy = SamplingParams(max_new_tokens=8)
    vllm_out = vllm_backend.generate(PROMPTS, greedy)
    chat_out = vllm_backend.chat([[{"role": "user", "content": "hi"}]], greedy)
    sampled = SamplingParams(temperature=1.0, n=4, max_new_tokens=8, seed=3)
    four = vllm_backend.generate(PROMPTS[:1], sampled)[0]
    sampled.n = 2
    two = vllm_backend.generate(PROMPTS[:1], sampled)[0]
    vllm_backend.close()

    hf_backend = build_backend(GenerationConfig(backend="hf", model=str(tiny_llama_dir), dtype="float32"))
    hf_out = hf_backend.generate(PROMPTS, greedy) + hf_backend.chat(
        [[{"role": "user", "content": "hi"}]], greedy
    )
    # fp32 on both sides; a random model can have near-ties, so allow one of the five to diverge
    assert sum(a == b for a, b in zip(vllm_out + chat_out, hf_out, strict=True)) >= len(hf_out) - 1
    assert two == four[:2]  # sample i has its own seed: the same whatever n
