"""``Predictor``: load an exported model and predict, with onnxruntime and numpy only.

    from serve import Predictor
    p = Predictor.load("models/example")          # a folder, a .onnx or a .torchscript.pt
    p.predict([[1.0, 2.0, 3.0]])                   # -> float32 array (1, n_targets)
    p.predict({"x0": [1, 2], "x1": [0, 0], "x2": [5, 5]})

Inputs are converted to the model's own dtype (float32 unless trained with --dtype float64) on
purpose, at this edge: onnxruntime refuses any other input dtype.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.columns import (
    ColumnSpec,
    Frame,
    FrameError,
    apply_on_unknown,
    check_frame,
    check_on_unknown,
    frame_from_arrow,
    frame_from_values,
    is_na,
    na_values_from_json,
)
from serve.core.errors import DataError, ModelError
from serve.core.formats import MAX_THREADS
from serve.core.graph import (
    ALLOWED_OPS,
    CONTRIBUTIONS,
    INTERVAL_OUTPUTS,
    PREDICTION,
    check_graph,
)
from serve.core.manifest import MANIFEST, names_problem, read_manifest
from serve.core.numbers import cell_number, first_non_finite, non_finite_message, shown
from serve.runtime.backends import (
    Backend,
    Cancel,
    OnnxBackend,
    TorchScriptBackend,
    read_model_bytes,
)
from serve.runtime.explanation import Explanation


class PredictionInputError(DataError, ValueError):
    """The rows given to ``predict`` do not fit the model: wrong width, names, values."""


class Predictor:
    """A loaded model: ``feature_names``, ``target_names``, ``metadata`` and ``predict(X)``."""

    def __init__(self, backend: Backend, *, feature_names: list[str], target_names: list[str],
                 metadata: dict[str, Any], dtype: np.dtype, source: str,
                 columns: list[ColumnSpec] | None = None, bounded: bool = False,
                 na_values: frozenset[str] = frozenset()) -> None:
        self._backend = backend
        # The graph is linreg's shape (a few elementwise operators and a Gemm, no loops): a run
        # takes microseconds a row, so a server may run a small one on its event loop.
        self.bounded = bounded
        self.columns = columns  # raw-column specs of a tabular model; None: one features matrix
        self.na_values = na_values  # a tabular model's NA tokens: texts read as a blank
        self.intervals = _interval_facts(backend, metadata)  # linreg-export --intervals, or None
        self.feature_names = list(feature_names)
        self.target_names = list(target_names)
        # linreg-export --contributions: {"terms", "baseline"}, or None
        self.contributions = _contribution_facts(backend, metadata, self.target_names, source)
        # every output by name: the prediction, and the intervals and contributions if exported
        self.output_names = [PREDICTION, *(INTERVAL_OUTPUTS if self.intervals is not None else ()),
                             *((CONTRIBUTIONS,) if self.contributions is not None else ())]
        self.metadata = metadata
        self.formula = metadata.get("linreg.formula")  # --formula's text, or None
        self.dtype = np.dtype(dtype)
        self.source = source
        self.n_features = len(self.feature_names)
        self.n_targets = len(self.target_names)

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             allow_foreign_graph: bool = False) -> Predictor:
        """Load a model folder (its ``model.onnx``), a ``.onnx`` file or a ``.torchscript.pt``.

        ``threads=None`` keeps two onnxruntime sessions: one thread, sequential, for small
        batches (lowest one-row latency) and one per physical core for large batches; an int
        (0 to ``MAX_THREADS``; 0 is one per core) pins a single session to that many threads.

        The file is read once: every session is built from those bytes, so changes on disk
        never change a loaded model. Its sha256 is checked against the folder's manifest, and
        the graph is checked (:mod:`serve.core.graph`) unless ``allow_foreign_graph``.
        """
        if threads is not None and not 0 <= threads <= MAX_THREADS:
            raise ModelError(f"--threads {threads}: use 0 (one per core) to {MAX_THREADS}")
        path = Path(path)
        if path.is_dir():
            onnx_path = path / "model.onnx"
            if not onnx_path.is_file():
                raise ModelError(f"{path}: no model.onnx; export it first (linreg-export {path})")
            return cls._load_onnx(onnx_path, threads, allow_foreign_graph)
        if not path.exists():
            raise ModelError(f"{path}: no such model file or folder")
        if path.name.endswith(".torchscript.pt"):
            return cls._load_torchscript(path)
        if path.suffix == ".onnx":
            return cls._load_onnx(path, threads, allow_foreign_graph)
        raise ModelError(f"{path}: expected a model folder, a .onnx or a .torchscript.pt file")

    @classmethod
    def _load_onnx(cls, path: Path, threads: int | None, allow_foreign: bool) -> Predictor:
        return cls.from_onnx_bytes(read_model_bytes(path), path, threads=threads,
                                   allow_foreign_graph=allow_foreign)

    @classmethod
    def from_onnx_bytes(cls, data: bytes, path: str | os.PathLike, *, threads: int | None = None,
                        allow_foreign_graph: bool = False) -> Predictor:
        """A Predictor from a model.onnx's bytes (a cluster worker gets the model this way);
        ``path`` names it in messages. The graph is checked as :meth:`load` does."""
        path = Path(path)
        facts = check_graph(data, str(path), allow_foreign=allow_foreign_graph)
        bounded = not (facts.ops - ALLOWED_OPS or facts.subgraphs or facts.functions)
        backend = OnnxBackend(data, path, threads)
        meta = backend.metadata
        n_in, n_out = backend.width_in, backend.width_out
        targets = _meta_names(meta, "target_names", "t", n_out, path)
        if backend.columns is not None:
            features = [c.name for c in backend.columns]
            _check_names(features, "feature_names", path)
            return cls(backend, feature_names=features, target_names=targets, metadata=meta,
                       dtype=backend.dtype, source=str(path), columns=backend.columns,
                       bounded=bounded,
                       na_values=na_values_from_json(meta.get("linreg.na_values"), str(path)))
        features = _meta_names(meta, "feature_names", "f", n_in, path)
        if len(features) != n_in or len(targets) != n_out:
            raise ModelError(f"{path}: metadata names {len(features)} features and "
                             f"{len(targets)} targets but the graph has {n_in} and {n_out}")
        return cls(backend, feature_names=features, target_names=targets, metadata=meta,
                   dtype=backend.dtype, source=str(path), bounded=bounded)

    @classmethod
    def _load_torchscript(cls, path: Path) -> Predictor:
        data = read_model_bytes(path)
        backend = TorchScriptBackend(data, path)
        meta: dict[str, Any] = {}
        if (path.parent / MANIFEST).is_file():
            manifest = read_manifest(path.parent)
            features, targets = manifest["features"], manifest["targets"]
            if backend.width_in != len(features) or backend.width_out != len(targets):
                raise ModelError(f"{path}: model.json names {len(features)} features and "
                                 f"{len(targets)} targets but the model has {backend.width_in} "
                                 f"and {backend.width_out}")
            meta = {"manifest": manifest}
        else:
            features = [f"f{i}" for i in range(backend.width_in)]
            targets = [f"t{i}" for i in range(backend.width_out)]
        return cls(backend, feature_names=features, target_names=targets, metadata=meta,
                   dtype=backend.dtype, source=str(path))

    def predict(self, X: Any, *, on_unknown: str | None = None, cancel: Cancel | None = None,
                row_offset: int = 0, source: str | None = None) -> np.ndarray:
        """Predictions ``(n_rows, n_targets)`` in the model's dtype for rows ``X``.

        ``X``: a 2-D array, a 1-D array (one row), a list of rows, a dict of columns by feature
        name, a list of dicts (records), or a pandas DataFrame (columns picked by name).
        ``on_unknown``: this call's policy for a cell the model cannot take (a level not seen
        in training, a blank with no fill, NaN or inf): ``"error"`` refuses it (naming it),
        ``"nan"`` makes the row's prediction NaN (count them with :func:`unpredictable_rows`),
        ``"reference"`` predicts an unseen level as its column's reference level; None keeps
        the model's own (its ``--unknown``).
        ``cancel``: a :class:`Cancel` another thread may trigger to stop this run early.
        ``row_offset`` and ``source`` place error messages in a file read in chunks.
        """
        return self._run(X, cancel, row_offset, source, on_unknown=on_unknown)[0]

    def predict_intervals(self, X: Any, *, on_unknown: str | None = None,
                          cancel: Cancel | None = None, row_offset: int = 0,
                          source: str | None = None) -> dict[str, np.ndarray]:
        """``prediction`` and its intervals, ``(n_rows, n_targets)`` each: ``prediction_lower``
        and ``prediction_upper`` for a new observation, ``mean_lower`` and ``mean_upper`` for
        the mean, at the level fixed at export (:attr:`intervals`); ``on_unknown`` as in
        :meth:`predict` (NaN rows are NaN in every output)."""
        if self.intervals is None:
            raise ModelError(f"{self.source}: this model has no intervals; export it with "
                             "linreg-export --intervals 0.95")
        names = [PREDICTION, *INTERVAL_OUTPUTS]
        return dict(zip(names, self._run(X, cancel, row_offset, source, names,
                                         on_unknown=on_unknown)))

    def outputs(self, X: Any, *, names: list[str] | None = None, on_unknown: str | None = None,
                cancel: Cancel | None = None, row_offset: int = 0, source: str | None = None,
                keep_nan: bool = False) -> dict[str, np.ndarray]:
        """Every output of the model (or those ``names``) by name, from one run: the
        prediction, the intervals and ``contributions`` (``(n_rows, n_targets · n_terms)``,
        target-major) when it has them; arguments as :meth:`predict`. ``keep_nan``: a row
        the model itself gives NaN for (a formula's np.log of 0) comes back NaN instead of
        being refused (a server judges each request's rows by that request's policy)."""
        names = self.output_names if names is None else [PREDICTION, *(
            n for n in names if n != PREDICTION)]
        if unknown := [n for n in names if n not in self.output_names]:
            raise ModelError(f"{self.source}: no output {unknown[0]!r}; the model's outputs are "
                             f"{', '.join(self.output_names)}")
        out = self._run(X, cancel, row_offset, source, names, on_unknown=on_unknown,
                        keep_nan=keep_nan) if len(names) > 1 else \
            [self._run(X, cancel, row_offset, source, on_unknown=on_unknown,
                       keep_nan=keep_nan)[0]]
        return dict(zip(names, out))

    def explain(self, X: Any, *, on_unknown: str | None = None, cancel: Cancel | None = None,
                row_offset: int = 0, source: str | None = None) -> Explanation:
        """Each term's contribution to each row's prediction (:class:`Explanation`: baseline
        + the contributions = the prediction); the model needs ``linreg-export
        --contributions``. Arguments as :meth:`predict`."""
        if self.contributions is None:
            raise ModelError(f"{self.source}: this model has no contributions; export it with "
                             "linreg-export --contributions")
        out = self._run(X, cancel, row_offset, source, [PREDICTION, CONTRIBUTIONS],
                        on_unknown=on_unknown)
        terms = self.contributions["terms"]
        return Explanation(self.target_names, terms, np.asarray(
            self.contributions["baseline"], dtype=np.float64), out[0],
            out[1].reshape(len(out[0]), self.n_targets, len(terms)))

    def prepare(self, X: Any, on_unknown: str | None, *, row_offset: int = 0,
                source: str | None = None) -> tuple[np.ndarray | Frame, np.ndarray | None]:
        """The rows the model runs on (:meth:`as_inputs`) under a per-call ``on_unknown``
        policy (see :meth:`predict`), and the rows whose predictions must be NaN (or None)."""
        rows = X if isinstance(X, (Frame, np.ndarray)) and self._own_layout(X) else \
            self.as_inputs(X)
        if on_unknown is None:
            return rows, None
        try:
            if isinstance(rows, Frame):
                return apply_on_unknown(rows, self.columns or [], on_unknown,
                                        row_offset=row_offset, source=source)
            check_on_unknown(on_unknown)
        except FrameError as e:
            raise PredictionInputError(str(e)) from None
        if on_unknown != "nan" or _all_finite(rows):
            return rows, None
        bad = ~np.isfinite(rows).all(axis=1)
        return np.where(bad[:, None], 0, rows).astype(self.dtype), bad

    def _own_layout(self, X: np.ndarray | Frame) -> bool:
        if isinstance(X, Frame):
            return self.columns is not None
        return self.columns is None and X.dtype == self.dtype and X.ndim == 2 \
            and X.shape[1] == self.n_features and X.flags.c_contiguous

    def _run(self, X: Any, cancel: Cancel | None, row_offset: int, source: str | None,
             names: list[str] | None = None, *, on_unknown: str | None = None,
             keep_nan: bool = False) -> list[np.ndarray]:
        nan_rows = None
        if on_unknown is not None:
            rows, nan_rows = self.prepare(X, on_unknown, row_offset=row_offset, source=source)
            feeds = rows.arrays if isinstance(rows, Frame) else rows
        elif self.columns is not None:
            rows = X if isinstance(X, Frame) else self.as_frame(X)
            feeds = rows.arrays
        elif type(X) is np.ndarray and X.dtype == self.dtype and X.ndim == 2 \
                and X.shape[1] == self.n_features and X.flags.c_contiguous:
            rows = feeds = X  # fast path: already the model's own layout
        else:
            rows = feeds = self.as_matrix(X)
        out = self._backend.run(feeds, cancel, names) if names else \
            [self._backend.run(feeds, cancel)]
        pred = out[0]
        if pred.shape != (len(rows), self.n_targets):  # (its dtype was checked at load)
            raise ModelError(f"{self.source}: the model returned {pred.dtype} {pred.shape} for "
                             f"{len(rows)} row(s); expected ({len(rows)}, {self.n_targets}) "
                             f"{self.dtype}")
        # One finiteness pass, on the (narrower) output: a NaN or inf input always shows there
        # in a linear model (a tabular graph gives NaN for a blank it cannot fill or an unseen
        # level), and is then named by its input cell; else the output overflowed.
        if not _all_finite(pred) and not (keep_nan and not np.isinf(pred).any()):
            if on_unknown == "nan" and not np.isinf(pred).any():
                # a formula's NaN (np.log of 0, a value outside bs()'s range): a NaN row too
                bad = np.isnan(pred).any(axis=1)
                nan_rows = bad if nan_rows is None else nan_rows | bad
            else:
                self.check_finite(rows, row_offset=row_offset, source=source)
                raise self._no_number(pred, row_offset, source)
        if nan_rows is not None:
            for o in out:
                o[nan_rows] = np.nan
        return out

    def _no_number(self, pred: np.ndarray, row_offset: int, source: str | None
                   ) -> PredictionInputError:
        """The error for a prediction that is not a number though every input cell is fine:
        a formula's function outside its domain, or overflow."""
        r, c, what = first_non_finite(pred)
        where = f"{source}: row {row_offset + r + 1}" if source else f"row {row_offset + r + 1}"
        if what == "NaN" and self.formula:
            return PredictionInputError(formula_nan_message(self.formula, where))
        return PredictionInputError(f"{where}: the prediction for {self.target_names[c]!r} "
                                    f"overflows {self.dtype} ({what}); the inputs are too "
                                    "large for this model")

    def column_kinds(self) -> tuple[list[str], list[str]]:
        """``(number columns, text columns)`` a reader should give this model: every feature
        as numbers, or a tabular model's categorical columns as text (numbers may be blank)."""
        if self.columns is None:
            return self.feature_names, []
        return ([c.name for c in self.columns if c.kind == "numeric"],
                [c.name for c in self.columns if c.kind == "categorical"])

    def as_inputs(self, X: Any) -> np.ndarray | Frame:
        """What the model runs on: a matrix (:meth:`as_matrix`) or, for a tabular model, a
        :class:`serve.core.columns.Frame` of raw columns (:meth:`as_frame`)."""
        return self.as_frame(X) if self.columns is not None else self.as_matrix(X)

    def as_frame(self, X: Any, *, row_offset: int = 0, source: str | None = None) -> Frame:
        """Raw values (records, a dict of columns, a DataFrame, rows in column order, an Arrow
        table) as the tabular model's inputs: strings, ``None`` and NaN welcome."""
        assert self.columns is not None
        if hasattr(X, "schema") and hasattr(X, "column"):  # an Arrow table or batch
            self._check_columns(list(X.schema.names))
            return frame_from_arrow(X, self.columns, self.dtype, na=self.na_values,
                                    row_offset=row_offset, source=source)
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
            self._check_columns(list(map(str, X.columns)))
            columns = {n: X[n].tolist() for n in self.feature_names}
        elif isinstance(X, Mapping):
            self._check_columns(list(X))
            columns = {n: _column_list(X[n]) for n in self.feature_names}
        else:
            if isinstance(X, np.ndarray):
                X = X.tolist()
            if not isinstance(X, (list, tuple)) or not X:
                raise PredictionInputError("expected rows: records (objects by column name), "
                                           "lists in column order, or a dict of columns")
            if isinstance(X[0], Mapping):
                X = self._records(X)
            elif not isinstance(X[0], (list, tuple)):
                X = [X]  # one row
            for r, row in enumerate(X, start=1):
                if not isinstance(row, (list, tuple)) or len(row) != self.n_features:
                    raise PredictionInputError(f"row {r}: expected {self.n_features} values "
                                               f"({', '.join(self.feature_names)})")
            columns = {n: [row[j] for row in X] for j, n in enumerate(self.feature_names)}
        try:
            return frame_from_values(columns, self.columns, self.dtype, na=self.na_values,
                                     row_offset=row_offset, source=source)
        except FrameError as e:
            raise PredictionInputError(str(e)) from None

    def as_matrix(self, X: Any) -> np.ndarray:
        """``X`` as a C-ordered ``(n_rows, n_features)`` array of the model's dtype."""
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
            self._check_columns(list(map(str, X.columns)))
            X = X[self.feature_names].to_numpy()
        elif isinstance(X, Mapping):
            self._check_columns(list(X))
            X = _columns_to_rows([X[name] for name in self.feature_names])
        elif isinstance(X, (list, tuple)) and X and isinstance(X[0], Mapping):
            X = self._records(X)
        arr = self._to_array(X)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise PredictionInputError(f"expected rows of {self.n_features} features, got an "
                                       f"array of shape {arr.shape}")
        if arr.shape[1] != self.n_features:
            raise PredictionInputError(f"expected {self.n_features} features per row "
                                       f"({', '.join(self.feature_names)}), got {arr.shape[1]}")
        with np.errstate(over="ignore"):  # overflow shows up as inf, named by check_finite
            return np.ascontiguousarray(arr, dtype=self.dtype)

    def _to_array(self, X: Any) -> np.ndarray:
        try:
            arr = np.asarray(X)
        except ValueError:  # ragged lists
            raise PredictionInputError(f"rows have different lengths; each row needs "
                                       f"{self.n_features} features") from None
        if arr.dtype.kind in "fiub":
            return arr
        if arr.dtype.kind == "c":
            raise PredictionInputError("complex numbers are not accepted")
        flat = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr.reshape(1, -1)
        out = np.empty(flat.shape, dtype=np.float64)
        for (r, c), v in np.ndenumerate(flat):
            try:
                out[r, c] = cell_number(v)
            except ValueError:
                what = "missing value" if v is None or is_na(v) else \
                    f"{shown(v)} is not a number"
                raise PredictionInputError(f"row {r + 1}, column {self._name(c)!r}: {what}") \
                    from None
        return out

    def _records(self, records: Any) -> list[list[Any]]:
        out = []
        for r, rec in enumerate(records, start=1):
            if not isinstance(rec, Mapping):
                raise PredictionInputError(f"row {r}: expected an object of feature values")
            missing = [n for n in self.feature_names if n not in rec]
            if missing:
                raise PredictionInputError(f"row {r}: missing feature(s) {', '.join(missing)}"
                                           + self._unknown(list(rec)))
            out.append([rec[n] for n in self.feature_names])
        return out

    def _check_columns(self, given: list[str]) -> None:
        missing = [n for n in self.feature_names if n not in given]
        if missing:
            raise PredictionInputError(f"missing feature column(s) {', '.join(missing)}; the "
                                       f"model needs {', '.join(self.feature_names)}"
                                       + self._unknown(given))

    def _unknown(self, given: list[str]) -> str:
        """Names given that the model does not know (other columns are fine, but a typo shows)."""
        unknown = [str(n) for n in given if n not in self.feature_names]
        return f" (unknown: {', '.join(unknown[:5])})" if unknown else ""

    def _name(self, c: int) -> str:
        return self.feature_names[c] if c < self.n_features else str(c)

    def check_finite(self, rows: np.ndarray | Frame, *, row_offset: int = 0,
                     source: str | None = None) -> None:
        """Raise a PredictionInputError naming the first cell the model cannot take: NaN or
        infinite (a tabular model: a blank without a fill, an unseen level), if any.

        ``row_offset`` counts the rows before ``rows`` (files read in chunks); ``source``
        prefixes the message (a file name)."""
        if isinstance(rows, Frame):
            message = check_frame(rows, self.columns or [], row_offset=row_offset,
                                  source=source)
        else:
            message = non_finite_message(rows, self.feature_names, source=source,
                                         row_offset=row_offset)
        if message:
            raise PredictionInputError(message)

    def __repr__(self) -> str:
        return (f"Predictor({self.source!r}, features={self.feature_names}, "
                f"targets={self.target_names}, dtype={self.dtype})")


def formula_nan_message(formula: str, where: str) -> str:
    """The one line for a row a formula gives no number for (``where``: "row 3", ...)."""
    return (f"{where}: the formula {formula!r} gives no number for these values (a function "
            "outside its domain, e.g. np.log of 0, or a value outside the range bs() was fit "
            "on); on_unknown='nan' predicts NaN for it")


def unpredictable_rows(predictions: np.ndarray) -> int:
    """How many rows a prediction under ``on_unknown="nan"`` left NaN (a prediction is never
    NaN otherwise: such a row is refused)."""
    return int(np.isnan(predictions).any(axis=1).sum()) if predictions.size else 0


def _all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, with a path ~5x faster for the few values of a small batch."""
    if a.size <= 64:
        return all(map(math.isfinite, a.ravel().tolist()))
    return bool(np.isfinite(a).all())


def _contribution_facts(backend: Backend, metadata: dict[str, Any], targets: list[str],
                        source: str) -> dict[str, Any] | None:
    """The terms and baselines of a model exported with ``--contributions`` (checked against
    the output's width), or None."""
    width = getattr(backend, "contribution_width", 0)
    if not width:
        return None
    facts = _json_value(metadata.get("linreg.contributions"))
    terms = facts.get("terms") if isinstance(facts, dict) else None
    baseline = facts.get("baseline") if isinstance(facts, dict) else None
    if not (isinstance(terms, list) and all(isinstance(t, str) for t in terms)
            and len(terms) * len(targets) == width and isinstance(baseline, list)
            and len(baseline) == len(targets)
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in baseline)):
        raise ModelError(f"{source}: its metadata linreg.contributions does not describe its "
                         f"contributions output ({width} wide); export it again")
    return {"terms": terms, "baseline": [float(b) for b in baseline]}


def _interval_facts(backend: Backend, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The interval outputs' facts (level, distribution, quantile, names) of a model exported
    with ``--intervals``, from its metadata; None for any other model."""
    names = getattr(backend, "interval_names", None)
    if not names:
        return None
    facts = _json_value(metadata.get("linreg.intervals"))
    return facts if isinstance(facts, dict) else {"outputs": names}


def _column_list(values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        return [values]  # one row given as {column: value}
    return list(values.tolist() if hasattr(values, "tolist") else values)


def _columns_to_rows(columns: list[Any]) -> np.ndarray:
    cols = [np.atleast_1d(np.asarray(c)) for c in columns]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise PredictionInputError(f"feature columns have different lengths {sorted(lengths)}")
    try:
        return np.stack(cols, axis=1) if cols else np.empty((0, 0))
    except ValueError as e:
        raise PredictionInputError(f"feature columns cannot form rows: {e}") from None


def _json_value(value: str | None) -> Any:
    """A metadata string as JSON, or None when it is absent or not JSON."""
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None


def _meta_names(meta: dict[str, str], key: str, prefix: str, n: int, path: Path) -> list[str]:
    """The names a model's metadata gives under ``key`` (``feature_names``, ``target_names``),
    checked; ``prefix0``, ``prefix1``, ... for a model whose metadata has none."""
    if not meta.get(key):
        return [f"{prefix}{i}" for i in range(n)]
    names = _json_value(meta[key])
    _check_names(names, key, path)
    return names


def _check_names(names: Any, key: str, path: Path) -> None:
    problem = names_problem(names)
    if problem:
        raise ModelError(f"{path}: its metadata {key} {problem}; the model cannot be used "
                         "safely (export it again with linreg-export)")
