"""megatron-core <-> Hugging Face checkpoint conversion (Llama, Qwen2), any TP/PP, with logit-parity
verification: `from_hf`, `to_hf`, `verify`; architecture mappings in `mappings/`."""

from torch.utils._device import _device_constructors

# megatron_infi's CPU runtime adapter wraps torch's tensor factories, and `torch.device(...)` used
# as a context manager recognises factories by identity in a set cached on its first use. Cached
# after the wrapping, that set holds the wrappers, the context stops applying, and transformers'
# meta-device loading leaves non-persistent buffers (the RoPE inv_freq) uninitialised: silently
# wrong HF logits. Caching it at import, before any adapter runs, keeps the originals.
_device_constructors()
