"""InfiR-VL image-text data: readers, image validation, near-dedup, image-text similarity, text
rendering and LLaVA-style conversation records (`infi data vl`, pipeline.py)."""
