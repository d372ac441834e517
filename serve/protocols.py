"""Request and response bodies of the HTTP protocols linreg-serve speaks, as pure functions.

- Open Inference Protocol (KServe v2 / Triton / MLServer), JSON and the binary tensor data
  extension (``Inference-Header-Content-Length``), FP32 and FP64 tensors.
- The simple v1 style: ``{"instances": [...]}`` or ``{"inputs": ...}`` -> ``{"predictions": [...]}``.
- MLflow's scoring format: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
  and ``text/csv`` bodies.

Every parser returns the rows as a float matrix in the model's feature order or raises
:class:`RequestError` with the HTTP status and a message that says what is wrong.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from serve.columns import Frame, specs_json
from serve.errors import DataError
from serve.graph import INTERVAL_OUTPUTS
from serve.jsontext import JSONTextError
from serve.jsontext import loads as json_loads
from serve.numbers import shown
from serve.predictor import Predictor
from serve.tables import check_unique, csv_batches, to_matrix

V2_DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
V2_NAMES = {np.dtype("float32"): "FP32", np.dtype("float64"): "FP64"}
INPUT_NAME, OUTPUT_NAME = "features", "prediction"


class RequestError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes) -> Any:
    """The body as JSON (:mod:`serve.jsontext`: bounded depth, huge integers as floats)."""
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
    _check_rows(predictor, rows, max_rows, prefix)
    return rows


def _check_rows(predictor: Predictor, rows: np.ndarray | Frame, max_rows: int,
                prefix: str = "") -> None:
    if len(rows) == 0:
        raise RequestError(f"{prefix}no rows to predict")
    if len(rows) > max_rows:
        raise RequestError(f"{prefix}{len(rows):,} rows is more than the limit of {max_rows:,} "
                           "per request (--max-rows)", status=413)
    try:
        predictor.check_finite(rows)
    except DataError as e:
        raise RequestError(f"{prefix}{e}") from None


# ------------------------------------------------------------------------ Open Inference v2

def v2_model_metadata(predictor: Predictor, name: str,
                      versions: list[str] | None = None) -> dict[str, Any]:
    dt = V2_NAMES[predictor.dtype]
    params: dict[str, Any] = {"feature_names": predictor.feature_names,
                              "target_names": predictor.target_names}
    outputs = [{"name": OUTPUT_NAME, "datatype": dt, "shape": [-1, predictor.n_targets]}]
    if predictor.intervals is not None:  # linreg-export --intervals
        outputs += [{"name": n, "datatype": dt, "shape": [-1, predictor.n_targets]}
                    for n in INTERVAL_OUTPUTS]
        params["intervals"] = predictor.intervals
    if predictor.columns is not None:  # one input per raw column
        inputs = [{"name": c.name, "datatype": "BYTES" if c.kind == "categorical" else dt,
                   "shape": [-1, 1]} for c in predictor.columns]
        params["columns"] = specs_json(predictor.columns)
    else:
        inputs = [{"name": INPUT_NAME, "datatype": dt, "shape": [-1, predictor.n_features]}]
    return {
        "name": name, "versions": versions or ["1"], "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": params,
    }


def v2_parse(predictor: Predictor, body: bytes, header_length: str | None, *,
             max_rows: int) -> tuple[dict[str, Any], np.ndarray | Frame]:
    """The request's JSON header and its input tensors as rows (:func:`v2_rows`)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length {header_length!r} is not a "
                               "number") from None
        if not 0 < n <= len(body):
            raise RequestError(f"Inference-Header-Content-Length {n} does not fit a body of "
                               f"{len(body)} bytes")
        header, binary = parse_json(body[:n]), memoryview(body)[n:]
    else:
        header, binary = parse_json(body), memoryview(b"")
    return header, v2_rows(predictor, header, binary, max_rows=max_rows)


def v2_rows(predictor: Predictor, header: Any, binary: memoryview, *,
            max_rows: int) -> np.ndarray | Frame:
    """The rows of a v2 request whose JSON header is parsed: its input tensors, with their
    ``binary_data_size`` parts taken in order from ``binary`` (HTTP's binary extension, or
    gRPC's ``raw_input_contents``)."""
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError("expected an object with an 'inputs' list")
    if predictor.columns is not None:
        return _v2_frame(predictor, header["inputs"], binary, max_rows)
    inputs = header["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(f"expected exactly one input tensor named {INPUT_NAME!r}, got "
                           f"{len(inputs)}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise RequestError(f"unknown input {shown(tensor.get('name'))}; the model's input is "
                           f"{INPUT_NAME!r}")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise RequestError(f"input datatype {shown(datatype)} is not supported; send FP32 "
                           "(or FP64)")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or len(shape) not in (1, 2) or not all(
            type(d) is int and d >= 0 for d in shape):
        raise RequestError(f"input shape {shown(shape)}: expected [rows, "
                           f"{predictor.n_features}]")
    if len(shape) == 1:
        shape = [1, shape[0]]
    if shape[1] != predictor.n_features:
        raise RequestError(f"input shape {shape}: the model takes {predictor.n_features} "
                           f"features per row ({', '.join(predictor.feature_names)})")
    if shape[0] > max_rows:
        raise RequestError(f"{shape[0]:,} rows is more than the limit of {max_rows:,} per "
                           "request (--max-rows)", status=413)
    count = shape[0] * shape[1]
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError("input 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None and type(size) is not int:
        raise RequestError(f"binary_data_size {shown(size)} must be a whole number of bytes")
    if size is not None:
        want = count * V2_DATATYPES[datatype].itemsize
        if size != want or len(binary) != size:
            raise RequestError(f"binary_data_size {size} for shape {shape} {datatype} must be "
                               f"{want} and match the {len(binary)} bytes after the JSON header")
        flat = np.frombuffer(binary, dtype=V2_DATATYPES[datatype])
    else:
        if len(binary):
            raise RequestError("binary data sent but no input declares binary_data_size")
        data = tensor.get("data")
        if data is None:
            raise RequestError("input has neither 'data' nor binary_data_size")
        flat = _flat_numbers(data, datatype)
        if flat.size != count:
            raise RequestError(f"input has {flat.size} values but shape {shape} needs {count}")
    rows = np.ascontiguousarray(flat.reshape(shape), dtype=predictor.dtype)
    _check_rows(predictor, rows, max_rows)
    return rows


def _v2_frame(predictor: Predictor, inputs: list[Any], binary: memoryview,
              max_rows: int) -> Frame:
    """A tabular model's request: one tensor per raw column, ``[rows]`` or ``[rows, 1]``;
    ``BYTES`` for categorical columns (JSON strings, or the binary extension's 4-byte
    little-endian length before each element), FP32/FP64 for numeric ones (``null`` or NaN
    for a blank)."""
    kinds = {c.name: c.kind for c in predictor.columns or []}
    columns: dict[str, list[Any]] = {}
    n_rows, offset = None, 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise RequestError("each input must be an object")
        name = tensor.get("name")
        if not isinstance(name, str) or name not in kinds:
            raise RequestError(f"unknown input {shown(name)}; the model's inputs are its "
                               f"columns {', '.join(kinds)}")
        if name in columns:
            raise RequestError(f"input {name!r} is given twice")
        datatype = tensor.get("datatype")
        allowed = ("BYTES",) if kinds[name] == "categorical" else tuple(V2_DATATYPES)
        if datatype not in allowed:
            raise RequestError(f"input {name!r}: datatype {shown(datatype)}; send "
                               f"{' or '.join(allowed)} for this {kinds[name]} column")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or len(shape) not in (1, 2) or not all(
                type(d) is int and d >= 0 for d in shape) or shape[1:] not in ([], [1]):
            raise RequestError(f"input {name!r}: shape {shown(shape)}; expected [rows] or "
                               "[rows, 1]")
        if shape[0] > max_rows:
            raise RequestError(f"{shape[0]:,} rows is more than the limit of {max_rows:,} "
                               "per request (--max-rows)", status=413)
        if n_rows is not None and shape[0] != n_rows:
            raise RequestError(f"input {name!r} has {shape[0]} rows, the others {n_rows}")
        n_rows = shape[0]
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError("input 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise RequestError(f"input {name!r}: binary_data_size {shown(size)} does not fit "
                                   f"the {len(binary) - offset} bytes left after the JSON header")
            part = binary[offset:offset + size]
            offset += size
            values = _binary_values(part, datatype, shape[0], name)
        else:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise RequestError(f"input {name!r} has neither a 'data' list nor "
                                   "binary_data_size")
            values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
            if len(values) != shape[0]:
                raise RequestError(f"input {name!r} has {len(values)} values but shape "
                                   f"{shape} needs {shape[0]}")
            if datatype == "BYTES" and not all(isinstance(v, str) or v is None for v in values):
                raise RequestError(f"input {name!r}: BYTES data must be strings")
            if datatype != "BYTES" and not all(v is None or (isinstance(v, (int, float)) and
                                                             not isinstance(v, bool))
                                               for v in values):
                raise RequestError(f"input {name!r}: {datatype} data must be numbers (null "
                                   "for a blank)")
        columns[name] = values
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data after the JSON header "
                           "belong to no input")
    missing = [c for c in kinds if c not in columns]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}; the model takes one input "
                           f"per column: {', '.join(kinds)}")
    return as_rows(predictor, columns, max_rows=max_rows)


def _binary_values(part: memoryview, datatype: str, n: int, name: str) -> list[Any]:
    if datatype != "BYTES":
        want = n * V2_DATATYPES[datatype].itemsize
        if len(part) != want:
            raise RequestError(f"input {name!r}: binary_data_size {len(part)} for {n} "
                               f"{datatype} values must be {want}")
        return np.frombuffer(part, dtype=V2_DATATYPES[datatype]).tolist()
    values, pos = [], 0
    raw = bytes(part)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise RequestError(f"input {name!r}: BYTES data ends inside a length prefix")
        size = int.from_bytes(raw[pos:pos + 4], "little")
        if pos + 4 + size > len(raw):
            raise RequestError(f"input {name!r}: a BYTES element runs past its data")
        try:
            values.append(raw[pos + 4:pos + 4 + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(f"input {name!r}: BYTES element {len(values) + 1} is not "
                               "UTF-8 text") from None
        pos += 4 + size
    if len(values) != n:
        raise RequestError(f"input {name!r} has {len(values)} BYTES elements but its shape "
                           f"needs {n}")
    return values


def _flat_numbers(data: Any, datatype: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except ValueError:
        raise RequestError("input data is ragged; send a flat list or rows of equal "
                           "length") from None
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise RequestError(f"input data must be numbers for datatype {datatype}")
    with np.errstate(over="ignore"):  # beyond the datatype's range becomes inf, refused later
        return arr.reshape(-1).astype(V2_DATATYPES[datatype])


def v2_response(header: dict[str, Any], outputs: Mapping[str, np.ndarray] | np.ndarray,
                name: str, version: str = "1") -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when the outputs go as binary data.
    ``outputs``: the prediction, or every output by name (prediction and its intervals); the
    request's ``outputs`` list picks some of them."""
    if isinstance(outputs, np.ndarray):
        outputs = {OUTPUT_NAME: outputs}
    asked = header.get("outputs")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError("request 'parameters' must be an object")
    default_binary = params.get("binary_data_output") is True
    chosen: dict[str, bool] = {}
    if asked is not None:
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise RequestError("'outputs' must be a list of objects")
        check_outputs([o.get("name") for o in asked], outputs)
        for o in asked:
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise RequestError("output 'parameters' must be an object")
            chosen[o["name"]] = p["binary_data"] is True if "binary_data" in p \
                else default_binary
    else:
        chosen = dict.fromkeys(outputs, default_binary)
    result: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": []}
    if "id" in header:
        if not isinstance(header["id"], str) or len(header["id"]) > 1024:
            raise RequestError("request 'id' must be a string of at most 1,024 characters")
        result["id"] = header["id"]
    blobs = []
    for key, binary in chosen.items():
        pred = outputs[key]
        out: dict[str, Any] = {"name": key, "datatype": V2_NAMES[pred.dtype],
                               "shape": list(pred.shape)}
        if binary:
            raw = np.ascontiguousarray(pred, dtype=pred.dtype.newbyteorder("<")).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = pred.reshape(-1).tolist()
        result["outputs"].append(out)
    head = json.dumps(result).encode()
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)


def check_outputs(names: list[Any], outputs: Mapping[str, np.ndarray]) -> None:
    """Every output a request asks for must be one of the model's."""
    for name in names:
        if name not in outputs:
            raise RequestError(f"unknown output {shown(name)}; the model's outputs are "
                               f"{', '.join(outputs)}")


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
    body = {"predictions": predictions(outputs[OUTPUT_NAME])}
    body.update({k: predictions(v) for k, v in outputs.items() if k != OUTPUT_NAME})
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
                                    name="CSV body"):
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
    _check_rows(predictor, matrix, max_rows)
    return matrix
