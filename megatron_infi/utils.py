"""Small shared helpers: atomic writes, directory locks, run-local caches, and the one reader of record
files (JSONL / JSON / Parquet) that skips and counts bad rows."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
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


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Records as JSONL (one object a line, UTF-8), written atomically."""
    atomic_write_bytes(
        path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    )


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


RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def is_record_file(path: str | Path) -> bool:
    return Path(path).name.endswith(RECORD_SUFFIXES)


def iter_rows(path: str | Path, keep=lambda index: True) -> Iterator[tuple[str, dict | None, str | None]]:
    """Every row of a record file, the one reader of the files stages hand each other.

    Yields (where, object, None), or (where, None, reason) for a row that is not a JSON object
    ("malformed-json", "non-utf8", "not-an-object") and once for the unreadable rest of a truncated
    or corrupt file ("truncated-or-corrupt-file"). Formats: .jsonl and .jsonl.gz (one object a line,
    a leading BOM ignored), .json (a list of objects, an object holding that list under "data" or
    "problems", or one object), .parquet (a `meta` column of JSON text, the way our writers store
    records whose meta differs from row to row, comes back as an object). Only rows whose 0-based
    index passes `keep` are parsed (sharding a file across tasks).
    """
    path = Path(path)
    name = path.name
    if name.endswith(".parquet"):
        yield from _parquet_rows(path, keep)
    elif name.endswith(".json"):
        yield from _json_rows(path, keep)
    else:
        yield from _jsonl_rows(path, keep)


def count_rows(path: str | Path) -> int:
    """Rows of a record file as iter_rows numbers them (for `keep`), without parsing JSONL lines."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.name.endswith(".json"):
        return max(1, sum(1 for _ in _json_rows(path, keep=lambda index: True)))
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return sum(1 for raw in handle if raw.strip())


def _parquet_rows(path: Path, keep) -> Iterator[tuple[str, dict | None, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    if keep(index):
                        meta = row.get("meta")
                        if isinstance(meta, str):  # someone else's text column named meta stays text
                            with contextlib.suppress(json.JSONDecodeError):
                                row["meta"] = json.loads(meta)
                        yield f"{path}:row {index}", row, None
                    index += 1
    except (pa.ArrowException, OSError) as err:
        yield f"{path}:row {index} ({err})", None, "truncated-or-corrupt-file"


def _json_rows(path: Path, keep) -> Iterator[tuple[str, dict | None, str | None]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        if keep(0):
            yield f"{path} ({err})", None, "malformed-json"
        return
    if isinstance(data, dict):
        listed = data.get("data", data.get("problems"))
        data = listed if isinstance(listed, list) else [data]
    rows = data if isinstance(data, list) else [data]
    for index, row in enumerate(rows):
        if keep(index):
            where = f"{path}[{index}]"
            yield (where, row, None) if isinstance(row, dict) else (where, None, "not-an-object")


def _jsonl_rows(path: Path, keep) -> Iterator[tuple[str, dict | None, str | None]]:
    import gzip
    import lzma
    import zlib

    opener = gzip.open if path.name.endswith(".gz") else open
    index = lineno = 0
    try:
        with opener(path, "rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                mine = keep(index)
                index += 1
                if not mine:
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(raw.decode("utf-8-sig"))
                except UnicodeDecodeError:
                    yield where, None, "non-utf8"
                    continue
                except json.JSONDecodeError:
                    yield where, None, "malformed-json"
                    continue
                yield (where, obj, None) if isinstance(obj, dict) else (where, None, "not-an-object")
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:  # a truncated or damaged .gz
        yield f"{path}:{lineno + 1} ({err})", None, "truncated-or-corrupt-file"


def read_rows(path: str | Path, skipped: SkipCounter) -> Iterator[tuple[str, dict]]:
    """(where, object) per usable row of a record file (iter_rows); the others are counted in `skipped`."""
    for where, obj, reason in iter_rows(path):
        if obj is None:
            skipped.skip(reason, where)
        else:
            yield where, obj


def read_jsonl(path: str | Path, skipped: SkipCounter | None = None) -> Iterator[dict]:
    """The objects of a record file (read_rows without the positions)."""
    for _, obj in read_rows(path, skipped if skipped is not None else SkipCounter()):
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
