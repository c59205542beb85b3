"""Small shared helpers: atomic writes, directory locks, run-local caches, JSONL reading that skips and
counts bad lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def xxh3_file(path: str | Path) -> str:
    """Fast content checksum (xxh3_64, hex) for integrity records of large files (data, checkpoints)."""
    import xxhash

    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask_mode(target: int | Path, mode: int) -> None:
    """Give a file (descriptor) or dir the mode a plain open() / mkdir() would: `mode` minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    if isinstance(target, int):
        os.fchmod(target, mode & ~umask)
    else:
        os.chmod(target, mode & ~umask)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same dir, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        _umask_mode(fd, 0o666)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    _umask_mode(tmp, 0o777)  # mkdtemp creates 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def set_run_caches(run_dir: str | Path) -> None:
    """Keep HF / wandb / XDG / torch caches inside the run dir instead of ~/.cache.

    Offline by default: nothing at run time may reach a hub (wandb is put offline where a stage turns
    it on; setting WANDB_MODE for every run made transformers announce "offline mode" in each log).
    """
    cache = Path(run_dir).resolve() / "cache"
    defaults = {
        "HF_HOME": cache / "hf",
        "XDG_CACHE_HOME": cache / "xdg",
        "WANDB_DIR": cache / "wandb",
        "WANDB_CACHE_DIR": cache / "wandb",
        "WANDB_CONFIG_DIR": cache / "wandb",
        "TRITON_CACHE_DIR": cache / "triton",
        "TORCHINDUCTOR_CACHE_DIR": cache / "inductor",
        "MPLCONFIGDIR": cache / "matplotlib",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, str(value))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@dataclass
class SkipCounter:
    """Counts records skipped for a reason, and where (file:line) the first few were."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str, keep: int = 5) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < keep:
            bucket.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_jsonl(path: str | Path, skipped: SkipCounter | None = None) -> Iterator[dict]:
    """Yield JSON objects; malformed, non-UTF-8 or non-object lines are counted in `skipped`."""
    path = Path(path)
    skipped = skipped if skipped is not None else SkipCounter()
    opener = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open
    with opener(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                skipped.skip("non-utf8", where)
                continue
            except json.JSONDecodeError:
                skipped.skip("malformed-json", where)
                continue
            if not isinstance(obj, dict):
                skipped.skip("not-an-object", where)
                continue
            yield obj


def check_across_ranks[T](
    items: list[T], check: Callable[[T], None], errors: tuple[type[Exception], ...]
) -> None:
    """Run `check` on this rank's share of `items` (round-robin over the default process group; all of
    them without one). Every rank then raises the first error (by item order) that any rank found, so
    no rank is left waiting in a collective for one that stopped."""
    import torch.distributed as dist

    distributed = dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    found: dict[int, Exception] = {}
    for i, item in enumerate(items):
        if i % world == rank:
            try:
                check(item)
            except errors as err:
                found[i] = err
    if distributed:
        gathered: list[dict[int, Exception]] = [{} for _ in range(world)]
        dist.all_gather_object(gathered, found)
        found = {i: err for part in gathered for i, err in part.items()}
    if found:
        raise found[min(found)]
