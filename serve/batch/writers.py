"""The writers of batch prediction: CSV and Parquet (through Arrow), NPY and JSON lines, each
taking the predictions (and the kept columns) chunk by chunk."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from serve.core.tables import csv_write_options
from serve.runtime.predictor import Predictor


def _arrow_floats(values: np.ndarray) -> pa.Array:
    """A float column as an Arrow array over the same memory (``pa.array`` would also look
    for masked arrays and pandas, importing both: a tenth of a small run)."""
    values = np.ascontiguousarray(values, dtype=None if values.dtype == np.float32
                                  else np.float64)
    kind = pa.float32() if values.dtype == np.float32 else pa.float64()
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


class _ArrowWriter:
    """CSV or Parquet, one record batch per chunk: kept columns first, then the targets."""

    def __init__(self, sink: BinaryIO, predictor: Predictor, keep: list[str], names: list[str],
                 fmt: str) -> None:
        self.sink, self.targets, self.keep, self.fmt = sink, names, keep, fmt
        self.writer = None

    def write(self, pred: np.ndarray, kept: dict[str, pa.Array]) -> None:
        cols = [kept[k] for k in self.keep] + [_arrow_floats(pred[:, j]) for j in
                                               range(pred.shape[1])]
        batch = pa.RecordBatch.from_arrays(cols, names=self.keep + self.targets)
        if self.writer is None and self.fmt == "csv":
            self.writer = pacsv.CSVWriter(self.sink, batch.schema,
                                          write_options=csv_write_options(batch.schema.names))
        elif self.writer is None:
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.sink, batch.schema)
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


WRITERS = {"csv": lambda s, p, k, n: _ArrowWriter(s, p, k, n, "csv"),
            "parquet": lambda s, p, k, n: _ArrowWriter(s, p, k, n, "parquet"),
            "npy": _NpyWriter, "jsonl": _JsonlWriter}
