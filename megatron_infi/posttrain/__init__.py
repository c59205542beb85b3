"""Post-training over Hugging Face model dirs with TRL: `infi sft` (two-phase curriculum),
`infi dpo-pairs` (preference pairs from the SFT model's own errors) and `infi dpo`.

Every stage reads an HF dir and writes an HF dir that the evaluation (and the next stage) loads.
"""
