"""megatron-core <-> Hugging Face checkpoint conversion (Llama, Qwen2), any TP/PP, with logit-parity
verification: `from_hf`, `to_hf`, `verify`; architecture mappings in `mappings/`."""
