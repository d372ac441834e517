"""What the command lines need before anything heavy is imported: the data file formats, by
extension, and the bound on onnxruntime threads. Nothing here imports numpy or pyarrow."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from serve.errors import DataError

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz",
            ".jsonl": "jsonl", ".ndjson": "jsonl"}
INPUT_FORMATS = ("csv", "parquet", "npy", "jsonl")
OUTPUT_FORMATS = ("csv", "parquet", "npy", "jsonl")
MAX_THREADS = 4 * (os.cpu_count() or 1)  # onnxruntime threads; more only adds contention


def file_format(path: str | Path, *, allowed: Sequence[str] | None = None) -> str:
    """The format of ``path`` by extension, or a DataError naming the ones that are accepted."""
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    ok = sorted({s for s, f in SUFFIXES.items() if allowed is None or f in allowed})
    if fmt is None or (allowed is not None and fmt not in allowed):
        raise DataError(f"{path}: unknown file type {Path(path).suffix or '(none)'!r}; "
                        f"use one of {', '.join(ok)}")
    return fmt
