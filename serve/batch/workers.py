"""What a cluster worker (Dask or Spark) runs: the model travels with the job as bytes, and each
worker process opens one onnxruntime session per model, cached by the model's sha256, with its
threads sized so the worker processes of one machine do not oversubscribe its cores.

``LINREG_WORKER_LOG=DIR`` makes each load leave a line in ``DIR/PID`` (the process and the
model's sha256): how a test counts that every worker loaded the model once;
``LINREG_WORKER_RSS=DIR`` leaves each worker's peak RSS (KiB) in ``DIR/PID`` (the bench).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.runtime.output_columns import column_names, column_values
from serve.runtime.predictor import Predictor

_CACHE: dict[str, Predictor] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelPayload:
    """A model as it travels to the workers: its ONNX bytes, their sha256, its name, and the
    onnxruntime threads each worker process may use: ``threads``, or when it is None, a fair
    share of the *worker's* cores among the ``processes`` worker processes of its machine
    (sized where it runs: a driver's core count says nothing of a worker's machine)."""

    data: bytes
    sha256: str
    source: str
    threads: int | None = 1
    allow_foreign_graph: bool = False
    processes: int = 1

    def worker_threads(self) -> int:
        """The threads this worker process gives onnxruntime, from its own machine."""
        return self.threads if self.threads is not None else fair_threads(self.processes)

    @classmethod
    def of(cls, model: str | os.PathLike | Predictor, *, threads: int | None = 1,
           processes: int = 1, allow_foreign_graph: bool = False) -> ModelPayload:
        """The payload of a model folder or .onnx file (loaded here first, so a bad model fails
        on the driver, once, not on every worker)."""
        if isinstance(model, Predictor):
            source = Path(model.source)
        else:
            path = Path(model)
            Predictor.load(path, threads=1, allow_foreign_graph=allow_foreign_graph)
            source = path / "model.onnx" if path.is_dir() else path
        data = source.read_bytes()
        return cls(data, hashlib.sha256(data).hexdigest(), str(source), threads,
                   allow_foreign_graph, processes)


def predictor(payload: ModelPayload) -> Predictor:
    """This process's session for ``payload``'s model, loaded on first use."""
    with _LOCK:
        found = _CACHE.get(payload.sha256)
        if found is None:
            found = Predictor.from_onnx_bytes(payload.data, payload.source,
                                              threads=payload.worker_threads(),
                                              allow_foreign_graph=payload.allow_foreign_graph)
            _CACHE[payload.sha256] = found
            log = os.environ.get("LINREG_WORKER_LOG")
            if log:
                with open(Path(log) / str(os.getpid()), "a") as f:
                    f.write(f"{os.getpid()} {payload.sha256}\n")
        return found


def predict_part(payload: ModelPayload, source: str, target: str, options: dict[str, Any]) -> int:
    """Predict one input part into one output file, on a worker; the rows predicted (a
    :class:`serve.batch.files.Predicted`, which also counts the rows left NaN)."""
    from serve.batch.files import predict_file

    # The target lies in the job's temporary output folder, which linreg made: a part run again
    # (its first worker was lost after or while writing it) replaces its own earlier output.
    rows = predict_file(predictor(payload), source, target, **{**options, "force": True})
    report = os.environ.get("LINREG_WORKER_RSS")  # bench/predict.py: peak memory per worker
    if report:
        import resource

        with open(Path(report) / str(os.getpid()), "w") as f:
            f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    return rows


def fair_threads(processes: int) -> int:
    """onnxruntime threads per worker process when ``processes`` share this machine."""
    from serve.core.formats import usable_cores

    return max(1, usable_cores() // max(1, processes))


def predict_batch(model: Predictor, batch: Any, *, source: str = "batch",
                  on_unknown: str | None = None, contributions: bool = False) -> Any:
    """Predictions ``(rows, targets)`` for an Arrow record batch or table holding the model's
    input columns by name (raw values for a tabular model); ``on_unknown`` as in
    :meth:`Predictor.predict`. With ``contributions``, then each target's baseline and terms
    (:mod:`serve.runtime.output_columns`)."""
    import pyarrow as pa

    from serve.core.tables import to_matrix

    if model.columns is not None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        rows = model.as_frame(table, source=source)
    else:
        rows = to_matrix(batch, model.feature_names, source=source, dtype=model.dtype,
                         finite=on_unknown != "nan")
    return column_values(model, rows, contributions=contributions, on_unknown=on_unknown)


def output_names(model: Predictor, suffix: str, contributions: bool) -> list[str]:
    """The columns :func:`predict_batch` gives: each target (plus ``suffix``), then with
    ``contributions`` each target's baseline and terms (refused for a model without them)."""
    return column_names(model, suffix=suffix, contributions=contributions)
