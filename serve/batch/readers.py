"""The readers of batch prediction: each input format as ``(rows, kept, first_row)`` chunks of
at most ``batch_rows`` rows (``rows`` in the model's feature order, or a tabular model's raw
columns; ``kept`` the pass-through columns; ``first_row`` the chunk's 0-based data row), each
bad cell named by its file, row and column."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from serve.core.columns import Frame
from serve.core.errors import DataError, first_line
from serve.core.jsontext import JSONTextError
from serve.core.jsontext import loads as json_loads
from serve.core.numbers import shown
from serve.core.tables import (
    CSV_MAX_BLOCK,
    STDIN,
    check_columns,
    check_unique,
    csv_batches,
    load_npy,
    npy_header,
    to_matrix,
)
from serve.runtime.predictor import Predictor

Chunk = tuple[np.ndarray | Frame, dict[str, pa.Array], int]


def _csv_chunks(source, predictor: Predictor, keep: list[str], batch_rows: int) -> Iterator[Chunk]:
    name = STDIN if str(source) == "-" else str(source)
    block = CSV_MAX_BLOCK if str(source) == "-" else _csv_block_size(Path(source), batch_rows)
    numbers, text = predictor.column_kinds()
    for batch, first in csv_batches(source, numbers, text=text, keep=keep, block_size=block,
                                    blanks=predictor.columns is not None,
                                    na=predictor.na_values):
        yield _rows(predictor, batch, name, first), {k: batch.column(k) for k in keep}, first


def _rows(predictor: Predictor, batch: pa.RecordBatch, name: str, first: int) -> np.ndarray | Frame:
    """A chunk's model inputs: the feature matrix, or a tabular model's raw columns."""
    if predictor.columns is not None:
        return predictor.as_frame(batch, row_offset=first, source=name)
    return to_matrix(batch, predictor.feature_names, source=name, dtype=predictor.dtype,
                     row_offset=first, finite=False)


def _csv_block_size(path: Path, batch_rows: int) -> int:
    """Bytes per block: about ``batch_rows`` rows, at most 1 MiB. pyarrow's streaming reader
    keeps some 32 blocks in flight, so the block size, not the file, bounds memory (measured:
    ~34 MB live with 1 MiB blocks, ~560 MB with 16 MB blocks, at the same speed)."""
    with open(path, "rb") as f:
        sample = f.read(1 << 16)
    per_row = max(1, len(sample) // max(1, sample.count(b"\n")))
    return int(min(max(batch_rows * per_row, 1 << 12), CSV_MAX_BLOCK))


def _parquet_chunks(source, predictor: Predictor, keep: list[str], batch_rows: int):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{source}: not a readable Parquet file ({first_line(e)})") from None
    check_unique(pf.schema_arrow.names, source)
    check_columns(str(source), pf.schema_arrow.names, predictor.feature_names, keep)
    first = 0
    columns = list(dict.fromkeys(predictor.feature_names + keep))
    batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{source}: after row {first}: not a readable Parquet file "
                            f"({first_line(e)})") from None
        yield _rows(predictor, batch, str(source), first), {k: batch.column(k) for k in keep}, \
            first
        first += batch.num_rows


def _npy_chunks(source, predictor: Predictor, keep: list[str], batch_rows: int):
    if keep:
        raise DataError(f"{source}: --keep needs named columns; .npy input has none")
    if str(source) == "-":
        name, blob = STDIN, io.BytesIO(sys.stdin.buffer.read())
        npy_header(blob, len(blob.getbuffer()), name)
        blob.seek(0)
        data = np.load(blob, allow_pickle=False)
    else:
        name, data = str(source), load_npy(source, mmap=True)
    if predictor.columns is not None:
        raise DataError(f"{name}: this model takes named raw columns ("
                        f"{', '.join(predictor.feature_names)}); give it CSV, Parquet or "
                        "JSON-lines")
    if data.ndim == 1 and predictor.n_features == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2 or data.shape[1] != predictor.n_features:
        raise DataError(f"{name}: array of shape {data.shape}; the model needs "
                        f"(rows, {predictor.n_features}) in feature order "
                        f"{', '.join(predictor.feature_names)}")
    for first in range(0, data.shape[0], batch_rows):
        with np.errstate(over="ignore"):  # an overflow is named as inf just below
            rows = np.ascontiguousarray(data[first:first + batch_rows], dtype=predictor.dtype)
        yield rows, {}, first


def _jsonl_chunks(source, predictor: Predictor, keep: list[str], batch_rows: int):
    """One JSON object per line (keys are feature names) or one array of features per line."""
    name = STDIN if str(source) == "-" else str(source)
    features = predictor.feature_names
    tabular = predictor.columns is not None
    stream = sys.stdin.buffer if str(source) == "-" else open(source, "rb")  # noqa: SIM115
    try:
        rows, kept, first, line_no = [], {k: [] for k in keep}, 0, 0
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                rec = json_loads(line)
            except JSONTextError as e:
                raise DataError(f"{name}: line {line_no}: {e}") from None
            if isinstance(rec, dict):
                missing = [f for f in features + keep if f not in rec]
                if missing:
                    raise DataError(f"{name}: line {line_no}: missing {', '.join(missing[:10])}")
                values = [rec[f] for f in features]
                for k in keep:
                    kept[k].append(rec[k])
            elif isinstance(rec, list) and not keep:
                values = rec
            else:
                raise DataError(f"{name}: line {line_no}: expected an object keyed by feature "
                                "name" + ("" if keep else " or an array of features"))
            if tabular:  # raw values of any JSON type, checked by the model's columns
                if len(values) != len(features):
                    raise DataError(f"{name}: line {line_no}: {len(values)} values, the model "
                                    f"needs {len(features)}")
            elif len(values) != len(features) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                bad = next((v for v in values if not isinstance(v, (int, float))
                            or isinstance(v, bool)), None)
                raise DataError(f"{name}: line {line_no}: " + (
                    f"{shown(bad)} is not a number" if bad is not None or len(values) == len(
                        features) else f"{len(values)} values, the model needs {len(features)}"))
            rows.append(values)
            if len(rows) == batch_rows:
                yield _jsonl_chunk(rows, kept, first, predictor, name)
                first += len(rows)
                rows, kept = [], {k: [] for k in keep}
        if rows:
            yield _jsonl_chunk(rows, kept, first, predictor, name)
        elif first == 0:
            raise DataError(f"{name}: no rows")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _jsonl_chunk(rows, kept, first, predictor: Predictor, name: str) -> Chunk:
    if predictor.columns is not None:
        columns = {n: [r[j] for r in rows] for j, n in enumerate(predictor.feature_names)}
        arr = predictor.as_frame(columns, row_offset=first, source=name)
    else:
        with np.errstate(over="ignore"):  # an overflow is named as inf just below
            arr = np.asarray(rows, dtype=predictor.dtype)
    columns = {}
    for k, v in kept.items():
        try:
            columns[k] = pa.array(v)
        except (pa.ArrowException, OverflowError):
            raise DataError(f"{name}: --keep {k}: the values after row {first} mix types or are "
                            "not scalars") from None
    return arr, columns, first


READERS = {"csv": _csv_chunks, "parquet": _parquet_chunks, "npy": _npy_chunks,
            "jsonl": _jsonl_chunks}
