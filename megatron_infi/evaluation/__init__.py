"""Evaluation: benchmarks as local files, zero-shot chat / few-shot generation, math-verify, letter and
sandboxed-code scoring, avg@k / pass@k tables. Entry point: `infi eval --config ...` (run.py)."""
