"""What the command lines need before anything heavy is imported: the data file formats, by
extension, and the bound on onnxruntime threads. Nothing here imports numpy or pyarrow."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from serve.core.errors import DataError

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz",
            ".jsonl": "jsonl", ".ndjson": "jsonl"}
INPUT_FORMATS = ("csv", "parquet", "npy", "jsonl")
OUTPUT_FORMATS = ("csv", "parquet", "npy", "jsonl")
def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset
    narrows), read where it runs: a cluster worker sizes itself on its own machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


PER_CORE = 4  # threads or local processes per core at most; more only adds contention
MAX_THREADS = PER_CORE * (os.cpu_count() or 1)  # onnxruntime threads


def file_format(path: str | Path, *, allowed: Sequence[str] | None = None) -> str:
    """The format of ``path`` by extension, or a DataError naming the ones that are accepted."""
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    ok = sorted({s for s, f in SUFFIXES.items() if allowed is None or f in allowed})
    if fmt is None or (allowed is not None and fmt not in allowed):
        raise DataError(f"{path}: unknown file type {Path(path).suffix or '(none)'!r}; "
                        f"use one of {', '.join(ok)}")
    return fmt


def is_many(source: str | Path) -> bool:
    """Whether ``source`` names several files: a folder, or a glob pattern (``*``, ``?``,
    ``[``) that is not itself an existing path."""
    text = str(source)
    return text != "-" and (Path(text).is_dir() or (not Path(text).exists() and
                                                    any(c in text for c in "*?[")))


def files_of(source: str | Path) -> list[Path]:
    """The files of a folder (recursively) or a glob, sorted, each real file once (a symlink
    loop such as ``again -> .`` under ``**`` names one file many times; so does a link to a
    file beside it); inside a folder, names starting with ``.`` (linreg's temporaries) or
    ``_`` (markers such as Spark's ``_SUCCESS``) are skipped. Empty when nothing is there: the
    caller says what it expected."""
    import glob

    text = str(source)
    if Path(text).is_dir():
        found = [p for p in Path(text).rglob("*") if p.is_file() and not any(
            part.startswith((".", "_")) for part in p.relative_to(text).parts)]
    else:
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    return _each_file_once(found)


def _each_file_once(paths: list[Path]) -> list[Path]:
    """``paths`` sorted, keeping one name per file (device and inode): its real name when it
    is listed (no link on the way), else the one with the fewest parts, then the first."""
    import os

    def detour(p: Path) -> tuple[bool, int, str]:
        return os.path.realpath(p) != os.path.abspath(p), len(p.parts), str(p)

    chosen: dict[tuple[int, int], Path] = {}
    for p in sorted(paths, key=detour):
        try:
            st = p.stat()
        except OSError:
            continue
        chosen.setdefault((st.st_dev, st.st_ino), p)
    return sorted(chosen.values())

