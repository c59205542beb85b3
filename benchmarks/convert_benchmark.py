"""Wall time and peak RSS of `infi convert from-hf` and `to-hf` on random models of real shapes.

    python benchmarks/convert_benchmark.py --preset llama3.2-1b --work /tmp/convert_bench
    python benchmarks/convert_benchmark.py --preset qwen2.5-7b --work /tmp/convert_bench

Writes a random bf16 HF model of the preset's shape (tensor by tensor into 5 GB shards), then
runs from-hf (for the --tp/--pp layout, default 2 x 2) and to-hf (default 5 GB shards) each in
its own process, timing it and sampling that process's peak RSS (VmHWM) from /proc. The round
trip is checked bit-identical on a sample of tensors. Prints one JSON line per step; the work dir
is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def write_random_hf(preset: str, out: Path, seed: int = 0) -> dict:
    from tqdm import tqdm

    from megatron_infi.checkpoints_tools import hf_io
    from megatron_infi.config.core import from_dict
    from megatron_infi.config.schema import ModelConfig, TrainConfig
    from megatron_infi.models import architecture

    model = from_dict(ModelConfig, TrainConfig.preprocess({"model": {"preset": preset}})["model"])
    config = architecture(model.arch).hf.hf_config_from_model(model, {"bos_token_id": 0, "eos_token_id": 1})
    config.dtype = "bfloat16"
    shapes = hf_io.expected_hf_tensors(config)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(name, hf_io.nbytes(shape, torch.bfloat16)) for name, shape in shapes.items()]
    writer = hf_io.ShardedSafetensorsWriter(out, plan, max_shard_bytes=5 * 10**9)
    generator = torch.Generator().manual_seed(seed)
    for name, shape in tqdm(shapes.items(), desc=f"random {preset}", unit="tensor"):
        writer.add(name, (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16))
    writer.finish()
    config.save_pretrained(out)
    params = sum(torch.Size(s).numel() for s in shapes.values())
    return {"params": params, "bytes": sum(n for _, n in plan)}


def _status_kib(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(VmHWM|RssAnon|RssFile):\s+(\d+) kB", text, re.M)}


def timed(cmd: list[str]) -> dict:
    """Run `cmd`: wall time, its peak RSS (the kernel's VmHWM of the process; not wait4's ru_maxrss,
    which keeps the forking parent's RSS across exec), and the peaks of the anonymous and
    file-backed (mapped files) parts of RSS, sampled every 50 ms."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for key, value in _status_kib(proc.pid).items():
            if key in peaks:
                peaks[key] = max(peaks[key], value)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    reader.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{b''.join(stderr_chunks).decode()[-3000:]}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(peaks["VmHWM"] / 2**20, 2),
        "peak_anon_gib": round(peaks["RssAnon"] / 2**20, 2),
        "peak_file_backed_gib": round(peaks["RssFile"] / 2**20, 2),
    }


def sample_identical(a: Path, b: Path, names: list[str]) -> bool:
    from megatron_infi.checkpoints_tools.hf_io import SafetensorsReader

    ra, rb = SafetensorsReader(a), SafetensorsReader(b)
    return all(torch.equal(ra.get(n).view(torch.int16), rb.get(n).view(torch.int16)) for n in names)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--pp", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work / args.preset
    shutil.rmtree(work, ignore_errors=True)
    try:
        start = time.perf_counter()
        info = write_random_hf(args.preset, work / "hf")
        print(
            json.dumps({"step": "write random HF", **info, "wall_s": round(time.perf_counter() - start, 1)})
        )
        python = [sys.executable, "-m"]
        from_hf = [
            *python,
            "megatron_infi.checkpoints_tools.from_hf",
            "--hf",
            str(work / "hf"),
            "--out",
            str(work / "mcore"),
        ]
        result = timed([*from_hf, "--tp", str(args.tp), "--pp", str(args.pp)])
        print(json.dumps({"step": "from-hf", "preset": args.preset, "tp": args.tp, "pp": args.pp, **result}))
        result = timed(
            [
                *python,
                "megatron_infi.checkpoints_tools.to_hf",
                "--load",
                str(work / "mcore"),
                "--out",
                str(work / "out"),
            ]
        )
        print(json.dumps({"step": "to-hf", "preset": args.preset, **result}))
        names = [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.mlp.up_proj.weight",
            "model.norm.weight",
        ]
        print(
            json.dumps(
                {"step": "check", "bit_identical_sample": sample_identical(work / "hf", work / "out", names)}
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
