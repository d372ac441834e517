"""Batch prediction from files, streamed in chunks so memory stays flat whatever the size.

    linreg-predict models/example data.csv -o predictions.parquet --keep id

Readers yield ``(rows, kept, first_row)`` chunks: ``rows`` a float matrix in the model's feature
order, ``kept`` the pass-through columns, ``first_row`` the 0-based data row of the chunk's start.
Writers take the predictions chunk by chunk. The output goes to a temporary file that replaces
the output path only when every row has been predicted (a bad row leaves nothing behind).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serve.core.atomic import output_file
from serve.core.columns import Frame
from serve.core.errors import DataError, OutputError, first_line
from serve.core.formats import INPUT_FORMATS, OUTPUT_FORMATS, file_format, files_of
from serve.core.graph import INTERVAL_OUTPUTS
from serve.core.jsontext import JSONTextError
from serve.core.jsontext import loads as json_loads
from serve.core.numbers import shown
from serve.core.ownership import own_temporary
from serve.core.tables import (
    CSV_MAX_BLOCK,
    STDIN,
    check_columns,
    check_readable,
    check_unique,
    csv_batches,
    csv_write_options,
    load_npy,
    npy_header,
    to_matrix,
)
from serve.runtime.predictor import Cancel, Predictor

Chunk = tuple[np.ndarray | Frame, dict[str, pa.Array], int]


def predict_file(predictor: Predictor, source: str | Path, output: str | Path, *,
                 input_format: str | None = None, output_format: str | None = None,
                 batch_rows: int = 65536, keep: Sequence[str] = (), force: bool = False,
                 pred_suffix: str | None = None, intervals: bool = False,
                 progress: Callable[[int], None] | None = None) -> int:
    """Predict every row of ``source`` into ``output`` (``-`` for stdin/stdout); return the count.

    Prediction columns are named after the targets, plus ``pred_suffix`` when given; without
    it, ``_pred`` is added only when a kept column has a target's name (actual beside
    predicted: ``--keep y`` gives ``y`` and ``y_pred``). ``intervals`` adds, per target,
    ``y_lower``, ``y_upper`` (a new observation) and ``y_mean_lower``, ``y_mean_upper``."""
    if batch_rows < 1:
        raise DataError(f"--batch-rows {batch_rows}: must be at least 1")
    in_fmt = input_format or ("csv" if str(source) == "-" else
                              file_format(source, allowed=INPUT_FORMATS))
    out_fmt = output_format or ("csv" if str(output) == "-" else
                                file_format(output, allowed=OUTPUT_FORMATS))
    keep = list(keep)
    suffix = pred_suffix if pred_suffix is not None else \
        ("_pred" if set(keep) & set(predictor.target_names) else "")
    names = [t + suffix for t in predictor.target_names]
    if intervals:
        if predictor.intervals is None:
            raise DataError(f"{predictor.source}: this model has no intervals; export it with "
                            "linreg-export --intervals 0.95")
        names += [f"{t}_{k}" for t in predictor.target_names for k in INTERVAL_SUFFIXES]
    if clash := sorted(set(keep) & set(names)):
        raise DataError(f"--keep {clash[0]}: the predictions have a column of that name; pick "
                        "another --pred-suffix")
    if out_fmt == "npy" and keep:
        raise DataError("--keep needs a CSV, Parquet or JSON-lines output; .npy holds numbers only")
    if str(source) != "-":
        check_readable(source)
        if str(output) != "-" and _same_file(source, output):
            raise OutputError(f"{output}: is the input file; write the predictions elsewhere")

    name = STDIN if str(source) == "-" else str(source)
    chunks = _READERS[in_fmt](source, predictor, keep, batch_rows)
    if str(output) == "-":
        return _run(predictor, chunks, sys.stdout.buffer, out_fmt, keep, names, progress, name,
                    intervals)
    with output_file(output, force=force) as sink:
        return _run(predictor, chunks, sink, out_fmt, keep, names, progress, name, intervals)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(b).exists() and Path(a).samefile(b)
    except OSError:
        return False


def _run(predictor: Predictor, chunks: Iterator[Chunk], sink: BinaryIO, out_fmt: str,
         keep: list[str], names: list[str], progress: Callable[[int], None] | None,
         name: str, intervals: bool = False) -> int:
    writer = _WRITERS[out_fmt](sink, predictor, keep, names)
    done = 0
    # The model runs on a worker thread while this one waits: a signal (Ctrl-C, SIGTERM) is
    # handled at once even inside a long run, which is then cancelled.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-predict")
    try:
        for rows, kept, first in chunks:
            cancel = Cancel()
            try:  # the one finiteness check is the model's (NaN/inf named in file terms)
                run = _with_intervals(predictor) if intervals else predictor.predict
                pred = pool.submit(run, rows, cancel=cancel, row_offset=first,
                                   source=name).result()
            except BaseException:  # an interrupt or an error: stop the run if still going
                cancel.cancel()
                raise
            writer.write(pred, kept)
            done += len(rows)
            if progress is not None:
                progress(done)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if done == 0:
        raise DataError(f"{name}: has a header but no data rows")
    writer.close()
    return done


INTERVAL_SUFFIXES = ("lower", "upper", "mean_lower", "mean_upper")


def _with_intervals(predictor: Predictor) -> Callable[..., np.ndarray]:
    """``predict`` giving the predictions, then per target its four bounds, as columns."""
    def run(rows, **kwargs) -> np.ndarray:
        out = predictor.predict_intervals(rows, **kwargs)
        bounds = [out[k] for k in INTERVAL_OUTPUTS]
        per_target = [b[:, [t]] for t in range(predictor.n_targets) for b in bounds]
        return np.hstack([out["prediction"], *per_target])
    return run


# ---------------------------------------------------------------------------------- readers

def _csv_chunks(source, predictor: Predictor, keep: list[str], batch_rows: int) -> Iterator[Chunk]:
    name = STDIN if str(source) == "-" else str(source)
    block = CSV_MAX_BLOCK if str(source) == "-" else _csv_block_size(Path(source), batch_rows)
    numbers, text = predictor.column_kinds()
    for batch, first in csv_batches(source, numbers, text=text, keep=keep, block_size=block,
                                    blanks=predictor.columns is not None):
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


_READERS = {"csv": _csv_chunks, "parquet": _parquet_chunks, "npy": _npy_chunks,
            "jsonl": _jsonl_chunks}


# ---------------------------------------------------------------------------------- writers

class _ArrowWriter:
    """CSV or Parquet, one record batch per chunk: kept columns first, then the targets."""

    def __init__(self, sink: BinaryIO, predictor: Predictor, keep: list[str], names: list[str],
                 fmt: str) -> None:
        self.sink, self.targets, self.keep, self.fmt = sink, names, keep, fmt
        self.writer = None

    def write(self, pred: np.ndarray, kept: dict[str, pa.Array]) -> None:
        cols = [kept[k] for k in self.keep] + [pa.array(pred[:, j]) for j in
                                               range(pred.shape[1])]
        batch = pa.RecordBatch.from_arrays(cols, names=self.keep + self.targets)
        if self.writer is None:
            self.writer = (pacsv.CSVWriter(self.sink, batch.schema,
                                           write_options=csv_write_options(batch.schema.names))
                           if self.fmt == "csv" else pq.ParquetWriter(self.sink, batch.schema))
        self.writer.write_batch(batch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _NpyWriter:
    """An .npy of predictions; the header is rewritten with the final row count at the end."""

    HEADER = 128

    def __init__(self, sink: BinaryIO, predictor: Predictor, keep: list[str],
                 names: list[str]) -> None:
        self.sink, self.n_targets, self.dtype, self.rows = sink, len(names), \
            predictor.dtype, 0
        self.seekable = sink.seekable()
        self.buffered: list[np.ndarray] = []
        if self.seekable:
            sink.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": (rows, self.n_targets)}
        text = repr(d).encode("latin1")
        pad = self.HEADER - 10 - len(text) - 1
        return b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little") + text + \
            b" " * pad + b"\n"

    def write(self, pred: np.ndarray, kept) -> None:
        if self.seekable:
            self.sink.write(np.ascontiguousarray(pred).tobytes())
        else:  # stdout: keep the (small) predictions, write once at the end
            self.buffered.append(pred)
        self.rows += len(pred)

    def close(self) -> None:
        if self.seekable:
            self.sink.seek(0)
            self.sink.write(self._header(self.rows))
        else:
            pred = np.concatenate(self.buffered) if self.buffered else \
                np.empty((0, self.n_targets), self.dtype)
            np.save(self.sink, pred)


class _JsonlWriter:
    def __init__(self, sink: BinaryIO, predictor: Predictor, keep: list[str],
                 names: list[str]) -> None:
        self.sink, self.targets, self.keep = sink, names, keep

    def write(self, pred: np.ndarray, kept: dict[str, pa.Array]) -> None:
        # float32 predictions print as their shortest float32 repr, not float64 noise.
        values = pred.tolist() if pred.dtype != np.float32 else \
            [[float(str(v)) for v in row] for row in pred]
        kept_lists = {k: v.to_pylist() for k, v in kept.items()}
        lines = []
        for i, row in enumerate(values):
            rec: dict[str, Any] = {k: kept_lists[k][i] for k in self.keep}
            rec.update(zip(self.targets, row))
            lines.append(json.dumps(rec))
        self.sink.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        pass


_WRITERS = {"csv": lambda s, p, k, n: _ArrowWriter(s, p, k, n, "csv"),
            "parquet": lambda s, p, k, n: _ArrowWriter(s, p, k, n, "parquet"),
            "npy": _NpyWriter, "jsonl": _JsonlWriter}

__all__ = ["predict_file", "INPUT_FORMATS", "OUTPUT_FORMATS"]


# ------------------------------------------------------------------ folders of files

PARTS_MANIFEST = "_linreg_predictions.json"  # marks an output folder linreg-predict wrote


def input_parts(source: str | Path) -> list[Path]:
    """The parts of a folder or glob (:func:`serve.core.formats.files_of`): CSV, Parquet,
    JSON-lines."""
    files = files_of(source)
    if not files:
        what = "an empty folder" if Path(source).is_dir() else "nothing matches this pattern"
        raise DataError(f"{source}: no input files ({what})")
    for f in files:
        file_format(f, allowed=("csv", "parquet", "jsonl"))
    return files


# One part's job: (input part, output file, predict_file's keyword options).
Job = tuple[str, str, dict[str, Any]]


def predict_folder(predictor: Predictor, source: str | Path, output: str | Path, *,
                   output_format: str | None = None, batch_rows: int = 65536,
                   keep: Sequence[str] = (), force: bool = False,
                   pred_suffix: str | None = None, intervals: bool = False,
                   progress: Callable[[int], None] | None = None,
                   engine: Callable[[list[Job]], list[int]] | None = None) -> int:
    """Predict every file of a folder or glob into the folder ``output``: one output file per
    input part, named after it (the same row order), in ``output_format`` (default: each
    part's own format). Written into a temporary folder renamed into place when every part is
    done: a bad row anywhere leaves nothing at ``output``. ``engine`` runs the parts' jobs
    (Dask, Spark: :mod:`serve.batch.engines`); by default they run here, one after the other.
    Returns the rows predicted."""
    from serve.core.atomic import atomic_dir

    parts = input_parts(source)
    root = Path(source) if Path(source).is_dir() else None
    names = [(p.relative_to(root) if root else Path(p.name)) for p in parts]
    if len(set(names)) != len(names):
        raise DataError(f"{source}: two parts have the same file name; give a folder instead")
    options = dict(batch_rows=batch_rows, keep=list(keep), pred_suffix=pred_suffix,
                   intervals=intervals)
    with atomic_dir(output, force=force, check_replaceable=_check_predictions) as tmp:
        jobs: list[Job] = []
        for part, rel in zip(parts, names):
            fmt = output_format or file_format(part)
            target = tmp / rel.with_suffix({"csv": ".csv", "parquet": ".parquet",
                                            "jsonl": ".jsonl", "npy": ".npy"}[fmt])
            target.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((str(part), str(target), {**options, "output_format": fmt}))
        counts = (engine or _local(predictor, progress))(jobs)
        listed = [{"input": part, "output": str(Path(target).relative_to(tmp)), "rows": n}
                  for (part, target, _), n in zip(jobs, counts)]
        _only_parts(tmp, listed)
        (tmp / PARTS_MANIFEST).write_text(json.dumps({
            "model": predictor.source, "rows": sum(counts), "parts": listed}, indent=1) + "\n")
    return sum(counts)


def _local(predictor: Predictor, progress: Callable[[int], None] | None):
    """Run the jobs here, one after the other (the ``local`` engine)."""
    def run(jobs: list[Job]) -> list[int]:
        counts: list[int] = []
        for part, target, options in jobs:
            base = sum(counts)
            counts.append(predict_file(predictor, part, target, **options,
                                       progress=None if progress is None else
                                       (lambda n, base=base: progress(base + n))))
        return counts
    return run


def _only_parts(folder: Path, listed: list[dict[str, Any]]) -> None:
    """Before the output folder appears: every part the engine counted is there (a job never
    reports rows it did not write), and nothing else is (a worker lost while writing leaves
    its temporary; the part was written again by another)."""
    own = {item["output"] for item in listed}
    for item in listed:
        if not (folder / item["output"]).is_file():
            raise OutputError(f"{item['input']}: the engine reported {item['rows']:,} rows but "
                              "its predictions were not written (is the output folder on a "
                              "filesystem every worker shares?)")
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        if str(path.relative_to(folder)) not in own:
            path.unlink()


def _check_predictions(folder: Path) -> None:
    """--force replaces only a folder linreg-predict wrote (its parts and the marker)."""
    try:
        listed = json.loads((folder / PARTS_MANIFEST).read_text())["parts"]
        own = {PARTS_MANIFEST} | {item["output"] for item in listed}
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputError(f"{folder}: not a folder of linreg-predict's predictions; --force "
                          "replaces only those: choose another -o") from None
    own_names = {Path(o).name for o in own}
    found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
             and not own_temporary(p.name, own_names)}
    if found - own:
        raise OutputError(f"{folder}: holds files linreg-predict did not write "
                          f"({sorted(found - own)[0]}); choose another -o")
