"""Batch prediction from files, streamed in chunks so memory stays flat whatever the size.

    linreg-predict models/example data.csv -o predictions.parquet --keep id

Readers yield ``(rows, kept, first_row)`` chunks: ``rows`` a float matrix in the model's feature
order, ``kept`` the pass-through columns, ``first_row`` the 0-based data row of the chunk's start.
Writers take the predictions chunk by chunk. The output goes to a temporary file that replaces
the output path only when every row has been predicted (a bad row leaves nothing behind).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from serve.batch.readers import READERS, Chunk
from serve.batch.writers import WRITERS
from serve.core.atomic import output_file
from serve.core.errors import DataError, OutputError
from serve.core.formats import INPUT_FORMATS, OUTPUT_FORMATS, file_format, files_of
from serve.core.ownership import own_temporary
from serve.core.tables import STDIN, check_readable
from serve.runtime.output_columns import column_names, column_values
from serve.runtime.predictor import Cancel, Predictor, unpredictable_rows

__all__ = ["predict_file", "predict_folder", "input_parts", "Predicted", "INPUT_FORMATS",
           "OUTPUT_FORMATS"]


class Predicted(int):
    """The rows predicted, with ``unpredictable``: how many of them were left NaN (a cell the
    model cannot take, under ``on_unknown="nan"``). An int, so a count is still a count."""

    unpredictable: int

    def __new__(cls, rows: int, unpredictable: int = 0) -> Predicted:
        count = super().__new__(cls, rows)
        count.unpredictable = unpredictable
        return count

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:  # to and from cluster workers
        return (Predicted, (int(self), self.unpredictable))

    @classmethod
    def total(cls, counts: Sequence[int]) -> Predicted:
        return cls(sum(counts), sum(getattr(c, "unpredictable", 0) for c in counts))


def unpredictable_message(count: Predicted) -> str | None:
    """The one warning line for rows left NaN, or None."""
    if not count.unpredictable:
        return None
    return (f"{count.unpredictable:,} of {int(count):,} row(s) could not be predicted (a level "
            "not seen in training, or a blank with no fill): their predictions are NaN "
            "(--on-unknown nan)")


def predict_file(predictor: Predictor, source: str | Path, output: str | Path, *,
                 input_format: str | None = None, output_format: str | None = None,
                 batch_rows: int = 65536, keep: Sequence[str] = (), force: bool = False,
                 pred_suffix: str | None = None, intervals: bool = False,
                 contributions: bool = False, on_unknown: str | None = None,
                 progress: Callable[[int], None] | None = None) -> Predicted:
    """Predict every row of ``source`` into ``output`` (``-`` for stdin/stdout); return the count
    (:class:`Predicted`: with the rows left NaN under ``on_unknown="nan"``).

    Prediction columns are named after the targets, plus ``pred_suffix`` when given; without
    it, ``_pred`` is added only when a kept column has a target's name (actual beside
    predicted: ``--keep y`` gives ``y`` and ``y_pred``). ``intervals`` adds, per target,
    ``y_lower``, ``y_upper`` (a new observation) and ``y_mean_lower``, ``y_mean_upper``;
    ``contributions``, per target, ``y_baseline`` and ``y_contrib_<term>`` per term (they add
    up to the prediction). ``on_unknown``: the policy for a cell the model cannot take
    (:meth:`Predictor.predict`)."""
    if batch_rows < 1:
        raise DataError(f"--batch-rows {batch_rows}: must be at least 1")
    in_fmt = input_format or ("csv" if str(source) == "-" else
                              file_format(source, allowed=INPUT_FORMATS))
    out_fmt = output_format or ("csv" if str(output) == "-" else
                                file_format(output, allowed=OUTPUT_FORMATS))
    keep = list(keep)
    suffix = pred_suffix if pred_suffix is not None else \
        ("_pred" if set(keep) & set(predictor.target_names) else "")
    names = column_names(predictor, suffix=suffix, intervals=intervals,
                         contributions=contributions)
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
    chunks = READERS[in_fmt](source, predictor, keep, batch_rows)
    if str(output) == "-":
        return _run(predictor, chunks, sys.stdout.buffer, out_fmt, keep, names, progress, name,
                    _columns_of(predictor, intervals, contributions), on_unknown)
    with output_file(output, force=force) as sink:
        return _run(predictor, chunks, sink, out_fmt, keep, names, progress, name,
                    _columns_of(predictor, intervals, contributions), on_unknown)


def _columns_of(predictor: Predictor, intervals: bool, contributions: bool
                ) -> Callable[..., np.ndarray]:
    """``predict`` giving the output file's number columns (:mod:`serve.runtime.output_columns`)."""
    if not (intervals or contributions):
        return predictor.predict
    return functools.partial(column_values, predictor, intervals=intervals,
                             contributions=contributions)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(b).exists() and Path(a).samefile(b)
    except OSError:
        return False


def _run(predictor: Predictor, chunks: Iterator[Chunk], sink: BinaryIO, out_fmt: str,
         keep: list[str], names: list[str], progress: Callable[[int], None] | None,
         name: str, run: Callable[..., np.ndarray], on_unknown: str | None = None
         ) -> Predicted:
    writer = WRITERS[out_fmt](sink, predictor, keep, names)
    done = nan_rows = 0
    # 1. The model runs on a worker thread while this one waits: a signal (Ctrl-C, SIGTERM)
    #    is handled at once even inside a long run, which is then cancelled.
    # 2. A chunk's predictions are written on another thread while the next chunk is read
    #    and predicted (one write in flight, so they land in order).
    predicting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-predict")
    writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-write")
    written: Future | None = None
    try:
        for rows, kept, first in chunks:
            cancel = Cancel()
            try:  # the one finiteness check is the model's (NaN/inf named in file terms)
                pred = predicting.submit(run, rows, cancel=cancel, row_offset=first,
                                         source=name, on_unknown=on_unknown).result()
            except BaseException:  # an interrupt or an error: stop the run if still going
                cancel.cancel()
                raise
            if written is not None:
                written.result()
            written = writing.submit(writer.write, pred, kept)
            done += len(rows)
            if on_unknown == "nan":
                nan_rows += unpredictable_rows(pred)
            if progress is not None:
                progress(done)
        if written is not None:
            written.result()
    finally:
        predicting.shutdown(wait=False, cancel_futures=True)
        writing.shutdown(wait=True, cancel_futures=True)  # never two writers of one sink
    if done == 0:
        raise DataError(f"{name}: has a header but no data rows")
    writer.close()
    return Predicted(done, nan_rows)




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
                   contributions: bool = False, on_unknown: str | None = None,
                   progress: Callable[[int], None] | None = None,
                   engine: Callable[[list[Job]], list[int]] | None = None) -> Predicted:
    """Predict every file of a folder or glob into the folder ``output``: one output file per
    input part, named after it (the same row order), in ``output_format`` (default: each
    part's own format). Written into a temporary folder renamed into place when every part is
    done: a bad row anywhere leaves nothing at ``output``. ``engine`` runs the parts' jobs
    (Dask, Spark: :mod:`serve.batch.engines`); by default they run here, one after the other.
    Returns the rows predicted (:class:`Predicted`)."""
    from serve.core.atomic import atomic_dir

    parts = input_parts(source)
    root = Path(source) if Path(source).is_dir() else None
    names = [(p.relative_to(root) if root else Path(p.name)) for p in parts]
    if len(set(names)) != len(names):
        raise DataError(f"{source}: two parts have the same file name; give a folder instead")
    options = dict(batch_rows=batch_rows, keep=list(keep), pred_suffix=pred_suffix,
                   intervals=intervals, contributions=contributions, on_unknown=on_unknown)
    with atomic_dir(output, force=force, check_replaceable=_check_predictions) as tmp:
        jobs: list[Job] = []
        for part, rel in zip(parts, names):
            fmt = output_format or file_format(part)
            target = tmp / rel.with_suffix({"csv": ".csv", "parquet": ".parquet",
                                            "jsonl": ".jsonl", "npy": ".npy"}[fmt])
            target.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((str(part), str(target), {**options, "output_format": fmt}))
        counts = (engine or _local(predictor, progress))(jobs)
        listed = [{"input": part, "output": str(Path(target).relative_to(tmp)), "rows": int(n),
                   **({"unpredictable": n.unpredictable} if getattr(n, "unpredictable", 0)
                      else {})}
                  for (part, target, _), n in zip(jobs, counts)]
        _only_parts(tmp, listed)
        total = Predicted.total(counts)
        (tmp / PARTS_MANIFEST).write_text(json.dumps({
            "model": predictor.source, "rows": int(total), "parts": listed,
            **({"unpredictable": total.unpredictable} if total.unpredictable else {})},
            indent=1) + "\n")
    return total


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
