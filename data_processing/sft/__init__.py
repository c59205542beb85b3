"""SFT data: InfiAlign selection (`infi data sft-select`, select.py) and InfiR synthesis
(`infi data sft-synthesize`, synthesize.py), on datatrove executors (local or SLURM).

records / formats   canonical {"messages", "meta"} records from messages / ShareGPT / Alpaca / QA files
filters             language ID, truncation, missing final answer, format checks
steps               datatrove PipelineSteps of the sharded stages (dropped records keep their reason)
decontaminate       15-gram + embedding-cosine checks against local benchmark files
selection/diversity domain quotas, K-means cluster quotas, 20-gram near-duplicates, longest per cluster
quality             math-verify, code sandbox, correction loop, LLM scores (megatron_infi.scoring)
curriculum / report phase 1 / phase 2 output, selection_report.md, PNGs
evolve / reward     Evol-Instruct evolution, best-of-n rejection with a reward model and the sandbox
llm / prompts       every LLM call through megatron_infi.generation, and the templates
demo / demo_data    the demo's selection on real data shipped in PyPI packages
"""
