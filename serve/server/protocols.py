"""Request and response bodies of the simpler HTTP protocols linreg-serve speaks, as pure
functions (the Open Inference Protocol has its own data plane, :mod:`serve.server.dataplane`).

- The simple v1 style: ``{"instances": [...]}`` or ``{"inputs": ...}`` -> ``{"predictions": [...]}``.
- MLflow's scoring format: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
  and ``text/csv`` bodies.

Every parser returns the rows as a float matrix in the model's feature order or raises
:class:`RequestError` with the HTTP status and a message that says what is wrong.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.core.columns import ON_UNKNOWN, Frame
from serve.core.errors import DataError, RequestError
from serve.core.graph import CONTRIBUTIONS, PREDICTION
from serve.core.jsontext import JSONTextError
from serve.core.jsontext import loads as json_loads
from serve.core.numbers import shown
from serve.core.tables import check_unique, csv_batches, to_matrix
from serve.runtime.explanation import Explanation
from serve.runtime.predictor import Predictor, formula_nan_message


def parse_json(body: bytes) -> Any:
    """The body as JSON (:mod:`serve.core.jsontext`: bounded depth, huge integers as floats)."""
    if not body.strip():
        raise RequestError("empty request body; send JSON")
    try:
        return json_loads(body)
    except JSONTextError as e:
        raise RequestError(f"request body is {e}" if str(e).startswith("not") else
                           f"request body: {e}") from None


@dataclass(slots=True)
class Checked:
    """A request's rows, checked and ready to run, under its ``on_unknown`` policy: the rows
    the policy could not predict (``nan``) are run on harmless values and set NaN after."""

    rows: np.ndarray | Frame
    nan_rows: np.ndarray | None = None
    on_unknown: str | None = None
    formula: str | None = None  # a formula model's: it may give NaN for values it was given

    def __len__(self) -> int:
        return len(self.rows)

    def finish(self, outputs: dict[str, np.ndarray]) -> int:
        """NaN in every output for the rows that could not be predicted; their count. A row
        a formula gave no number for (np.log of 0) is one of them under ``on_unknown="nan"``,
        else this request's 422 (the model ran it as NaN: a batch is never failed for it)."""
        if self.formula is not None:
            bad = np.isnan(outputs[PREDICTION]).any(axis=1)
            if self.nan_rows is not None:
                bad &= ~self.nan_rows
            if bad.any():
                if self.on_unknown != "nan":
                    r = int(np.flatnonzero(bad)[0])
                    raise RequestError(formula_nan_message(self.formula, f"row {r + 1}"),
                                       status=422)
                self.nan_rows = bad if self.nan_rows is None else self.nan_rows | bad
        if self.nan_rows is None:
            return 0
        for values in outputs.values():
            values[self.nan_rows] = np.nan
        return int(self.nan_rows.sum())


def checked(predictor: Predictor, rows: Any, *, max_rows: int, on_unknown: str | None = None,
            prefix: str = "") -> Checked:
    """``rows`` (values, a matrix or a Frame) as the model runs them under ``on_unknown``
    (:meth:`Predictor.prepare`), bounded in count; any other cell the model cannot take is a
    400 naming it."""
    nan_rows = None
    if on_unknown is not None:
        try:
            rows, nan_rows = predictor.prepare(rows, on_unknown)
        except DataError as e:
            raise RequestError(f"{prefix}{e}") from None
    check_rows(predictor, rows, max_rows, prefix)
    return Checked(rows, nan_rows, on_unknown, predictor.formula)


def on_unknown_of(value: Any) -> str | None:
    """A request's ``on_unknown`` parameter, checked (None: the model's own policy)."""
    if value is None:
        return None
    if value not in ON_UNKNOWN:
        raise RequestError(f"on_unknown {shown(value)}: use one of {', '.join(ON_UNKNOWN)}")
    return value


def as_rows(predictor: Predictor, X: Any, *, max_rows: int, where: str = "",
            on_unknown: str | None = None) -> Checked:
    """Rows from JSON-ish values via the Predictor's own checks, bounded in count."""
    prefix = f"{where}: " if where else ""
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise RequestError(f"{prefix}no rows to predict")
    try:
        rows = predictor.as_inputs(X)
    except DataError as e:
        raise RequestError(f"{prefix}{e}") from None
    return checked(predictor, rows, max_rows=max_rows, on_unknown=on_unknown, prefix=prefix)


def check_count(rows: int, max_rows: int, prefix: str = "") -> None:
    """At most ``--max-rows`` rows a request (413), checked as soon as the count is known."""
    if rows > max_rows:
        raise RequestError(f"{prefix}{rows:,} rows is more than the limit of {max_rows:,} per "
                           "request (--max-rows)", status=413)


def check_rows(predictor: Predictor, rows: np.ndarray | Frame, max_rows: int,
                prefix: str = "") -> None:
    if len(rows) == 0:
        raise RequestError(f"{prefix}no rows to predict")
    check_count(len(rows), max_rows, prefix)
    try:
        predictor.check_finite(rows)
    except DataError as e:
        raise RequestError(f"{prefix}{e}") from None


# ------------------------------------------------------------------------ v1 and MLflow

def example_row(predictor: Predictor) -> list[Any] | dict[str, Any]:
    """One row a client can send to see the model work (the index page shows it)."""
    if predictor.columns is None:
        return [0.0] * predictor.n_features
    return {c.name: (c.levels[0] if c.kind == "categorical" else
                     (c.fill if c.fill is not None else 0.0)) for c in predictor.columns}


def predictions(pred: np.ndarray, *, nan: bool = False) -> list:
    """One number per row for a one-target model, else one list per row; with ``nan`` (rows
    left NaN by on_unknown), NaN as JSON's null."""
    values = pred[:, 0] if pred.shape[1] == 1 else pred
    return json_list(values) if nan else values.tolist()


def json_list(values: np.ndarray) -> list:
    """``values.tolist()`` with NaN as None (JSON has no NaN)."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


def predictions_body(outputs: Mapping[str, np.ndarray], unpredictable: int = 0,
                     predictor: Predictor | None = None) -> dict[str, Any]:
    """v1 and MLflow: ``{"predictions": [...]}``, plus ``prediction_lower``, ... for a model
    with intervals, each shaped like ``predictions``, and for a model with contributions
    ``contributions`` (per row ``{term: value}``, or ``{target: {term: value}}``) and
    ``baseline``; ``null`` for a row that could not be predicted, counted in
    ``unpredictable_rows`` (on_unknown ``nan``)."""
    nan = unpredictable > 0
    body: dict[str, Any] = {"predictions": predictions(outputs[PREDICTION], nan=nan)}
    body.update({k: predictions(v, nan=nan) for k, v in outputs.items()
                 if k not in (PREDICTION, CONTRIBUTIONS)})
    if CONTRIBUTIONS in outputs and predictor is not None and predictor.contributions:
        facts = predictor.contributions
        pred = outputs[PREDICTION]
        body[CONTRIBUTIONS] = Explanation(
            predictor.target_names, facts["terms"], np.asarray(facts["baseline"]), pred,
            outputs[CONTRIBUTIONS].reshape(len(pred), pred.shape[1], -1)).records()
        base = facts["baseline"]
        body["baseline"] = base[0] if len(base) == 1 else base
    if nan:
        body["unpredictable_rows"] = unpredictable
    return body


def v1_parse(predictor: Predictor, body: bytes, *, max_rows: int,
             on_unknown: str | None = None) -> Checked:
    """``{"instances": rows or records}`` or ``{"inputs": rows or {feature: column}}``."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or not ({"instances", "inputs"} & payload.keys()):
        raise RequestError('expected {"instances": [[...], ...]} or {"inputs": ...}')
    key = "instances" if "instances" in payload else "inputs"
    return as_rows(predictor, payload[key], max_rows=max_rows, where=key,
                   on_unknown=on_unknown)


def mlflow_parse(predictor: Predictor, body: bytes, content_type: str, *,
                 max_rows: int, on_unknown: str | None = None) -> Checked:
    """MLflow's /invocations formats; ``params.on_unknown`` in a JSON body (MLflow's
    inference parameters) overrides ``on_unknown``."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        return _csv_rows(predictor, body, max_rows, on_unknown)
    if kind not in ("application/json", ""):
        raise RequestError(f"Content-Type {kind!r} is not supported; use application/json or "
                           "text/csv", status=415)
    payload = parse_json(body)
    if isinstance(payload, dict) and "params" in payload:
        params = payload.pop("params")
        if not isinstance(params, dict):
            raise RequestError("'params' must be an object")
        on_unknown = on_unknown_of(params.get("on_unknown", on_unknown))
    keys = {"dataframe_split", "dataframe_records", "instances", "inputs"}
    if not isinstance(payload, dict) or len(keys & payload.keys()) != 1:
        raise RequestError("expected exactly one of dataframe_split, dataframe_records, "
                           "instances or inputs")
    (key,) = keys & payload.keys()
    value = payload[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError('dataframe_split: expected {"columns": [...], "data": [[...]]}')
        data, columns = value["data"], value.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise RequestError("dataframe_split: 'columns' must be a list of names")
            try:
                check_unique(columns, "dataframe_split")
            except DataError as e:
                raise RequestError(str(e)) from None
            if any(not isinstance(r, list) or len(r) != len(columns) for r in data):
                raise RequestError("dataframe_split: every row of 'data' needs one value per "
                                   "column")
            data = [dict(zip(columns, r)) for r in data]
        return as_rows(predictor, data, max_rows=max_rows, where=key, on_unknown=on_unknown)
    if key == "dataframe_records" and (not isinstance(value, list) or
                                       not all(isinstance(r, Mapping) for r in value)):
        raise RequestError("dataframe_records: expected a list of objects")
    return as_rows(predictor, value, max_rows=max_rows, where=key, on_unknown=on_unknown)


def pa_table(batches: list[Any]) -> Any:
    """Record batches as one table (pyarrow is imported only when CSV arrives)."""
    import pyarrow as pa

    return pa.Table.from_batches(batches)


def _csv_rows(predictor: Predictor, body: bytes, max_rows: int,
              on_unknown: str | None) -> Checked:
    """A ``text/csv`` body, read by the same reader and number rule as CSV files."""
    if not body.strip():
        raise RequestError("empty CSV body")
    parts, rows = [], 0
    tabular = predictor.columns is not None
    numbers, text = predictor.column_kinds()
    try:
        for batch, _ in csv_batches(io.BytesIO(body), numbers, text=text, blanks=tabular,
                                    na=predictor.na_values, name="CSV body"):
            rows += batch.num_rows
            if rows > max_rows:
                raise RequestError(f"more than {max_rows:,} rows is more than the limit per "
                                   "request (--max-rows)", status=413)
            parts.append(batch)
        if not parts:
            raise RequestError("CSV body: no rows to predict")
        if tabular:
            matrix = predictor.as_frame(pa_table(parts), source="CSV body")
        else:
            matrix = to_matrix(pa_table(parts), predictor.feature_names, source="CSV body",
                               dtype=predictor.dtype, finite=on_unknown != "nan")
    except DataError as e:
        raise RequestError(str(e)) from None
    return checked(predictor, matrix, max_rows=max_rows, on_unknown=on_unknown)
