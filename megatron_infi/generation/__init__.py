"""Text generation shared by evaluation, SFT-data synthesis and DPO pairs.

    backend = build_backend(GenerationConfig(model="runs/sft/hf", cache_dir="runs/eval/cache"))
    replies = backend.chat([[{"role": "user", "content": "2+2?"}]], SamplingParams(n=4, temperature=0.6))

Backends: `hf` (transformers, CPU or GPU), `vllm` (GPU), `openai` (any OpenAI-compatible server);
`auto` picks openai when base_url is set, else vllm when it imports and CUDA is up, else hf.
"""

from megatron_infi.generation.backend import (
    Conversation,
    GenerationBackend,
    GenerationError,
    build_backend,
    select_backend,
)
from megatron_infi.generation.params import GenerationConfig, SamplingParams

__all__ = [
    "Conversation",
    "GenerationBackend",
    "GenerationConfig",
    "GenerationError",
    "SamplingParams",
    "build_backend",
    "select_backend",
]
