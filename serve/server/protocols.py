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
from typing import Any

import numpy as np

from serve.core.columns import Frame
from serve.core.errors import DataError, RequestError
from serve.core.graph import PREDICTION
from serve.core.jsontext import JSONTextError
from serve.core.jsontext import loads as json_loads
from serve.core.tables import check_unique, csv_batches, to_matrix
from serve.runtime.predictor import Predictor


def parse_json(body: bytes) -> Any:
    """The body as JSON (:mod:`serve.core.jsontext`: bounded depth, huge integers as floats)."""
    if not body.strip():
        raise RequestError("empty request body; send JSON")
    try:
        return json_loads(body)
    except JSONTextError as e:
        raise RequestError(f"request body is {e}" if str(e).startswith("not") else
                           f"request body: {e}") from None


def as_rows(predictor: Predictor, X: Any, *, max_rows: int,
            where: str = "") -> np.ndarray | Frame:
    """Rows from JSON-ish values via the Predictor's own checks, bounded in count."""
    prefix = f"{where}: " if where else ""
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise RequestError(f"{prefix}no rows to predict")
    try:
        rows = predictor.as_inputs(X)
    except DataError as e:
        raise RequestError(f"{prefix}{e}") from None
    check_rows(predictor, rows, max_rows, prefix)
    return rows


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


def predictions(pred: np.ndarray) -> list:
    """One number per row for a one-target model, else one list per row."""
    return pred[:, 0].tolist() if pred.shape[1] == 1 else pred.tolist()


def predictions_body(outputs: Mapping[str, np.ndarray]) -> dict[str, list]:
    """v1 and MLflow: ``{"predictions": [...]}``, plus ``prediction_lower``, ... for a model
    with intervals, each shaped like ``predictions``."""
    body = {"predictions": predictions(outputs[PREDICTION])}
    body.update({k: predictions(v) for k, v in outputs.items() if k != PREDICTION})
    return body


def v1_parse(predictor: Predictor, body: bytes, *, max_rows: int) -> np.ndarray:
    """``{"instances": rows or records}`` or ``{"inputs": rows or {feature: column}}``."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or not ({"instances", "inputs"} & payload.keys()):
        raise RequestError('expected {"instances": [[...], ...]} or {"inputs": ...}')
    key = "instances" if "instances" in payload else "inputs"
    return as_rows(predictor, payload[key], max_rows=max_rows, where=key)


def mlflow_parse(predictor: Predictor, body: bytes, content_type: str, *,
                 max_rows: int) -> np.ndarray:
    """MLflow's /invocations formats."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        return _csv_rows(predictor, body, max_rows)
    if kind not in ("application/json", ""):
        raise RequestError(f"Content-Type {kind!r} is not supported; use application/json or "
                           "text/csv", status=415)
    payload = parse_json(body)
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
        return as_rows(predictor, data, max_rows=max_rows, where=key)
    if key == "dataframe_records" and (not isinstance(value, list) or
                                       not all(isinstance(r, Mapping) for r in value)):
        raise RequestError("dataframe_records: expected a list of objects")
    return as_rows(predictor, value, max_rows=max_rows, where=key)


def pa_table(batches: list[Any]) -> Any:
    """Record batches as one table (pyarrow is imported only when CSV arrives)."""
    import pyarrow as pa

    return pa.Table.from_batches(batches)


def _csv_rows(predictor: Predictor, body: bytes, max_rows: int) -> np.ndarray | Frame:
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
                               dtype=predictor.dtype)
    except DataError as e:
        raise RequestError(str(e)) from None
    check_rows(predictor, matrix, max_rows)
    return matrix
