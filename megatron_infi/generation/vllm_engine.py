"""vLLM's offline engine (GPU only): imported lazily so the CPU path never needs vllm installed.

Each (input, sample index) is its own request with seed + index, so sample i of a prompt is the same
whatever n or batch it was generated in. Chats are rendered with the model's chat template and sent
as token ids, so the BOS token the template writes is not doubled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megatron_infi.generation.backend import (
    GenerationBackend,
    GenerationError,
    model_dir_fingerprint,
    sample_seed,
)
from megatron_infi.generation.params import GenerationConfig, SamplingParams


class VLLMBackend(GenerationBackend):
    name = "vllm"

    def __init__(self, cfg: GenerationConfig):
        super().__init__(cfg)
        try:
            from vllm import LLM
        except ImportError as err:
            raise GenerationError(
                f"backend vllm: vllm does not import ({err}); use backend: hf on CPU"
            ) from err
        self.llm = LLM(
            model=str(Path(cfg.model)),
            dtype=cfg.dtype,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            seed=0,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._model_id = model_dir_fingerprint(cfg.model)

    @property
    def model_id(self) -> str:
        return self._model_id

    def _prompt(self, kind: str, item: Any) -> dict:
        if kind == "chat":
            text = self.tokenizer.apply_chat_template(item, tokenize=False, add_generation_prompt=True)
            return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=False)["input_ids"]}
        return {"prompt": item}

    def _complete(
        self, kind: str, items: list[Any], sample_indices: list[int], params: SamplingParams
    ) -> list[str]:
        from vllm import SamplingParams as VLLMSamplingParams

        requests = [self._prompt(kind, item) for item in items]
        sampling = [
            VLLMSamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                seed=sample_seed(params.seed, index),
            )
            for index in sample_indices
        ]
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def close(self) -> None:
        import gc

        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
