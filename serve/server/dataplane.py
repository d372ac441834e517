"""The Open Inference Protocol (KServe v2) data plane, one for every transport.

As in KServe's ``DataPlane`` and MLServer's converters, each transport only converts:

1. a converter turns what arrived into an :class:`InferRequest` — :func:`from_json` for HTTP
   (JSON, and the binary tensor data extension), :func:`from_protobuf` for gRPC's
   ``ModelInferRequest`` (typed ``contents`` or ``raw_input_contents``);
2. :func:`request_rows` checks it against the model — input names, datatypes, shapes, sizes,
   row limits, finite values, the outputs asked for — all before anything runs, and gives the
   rows (a matrix, or a tabular model's :class:`serve.core.columns.Frame`);
3. the server predicts them, and :func:`response` pairs the outputs with the request's choice;
4. an encoder writes it: :func:`to_json` (HTTP, binary parts when asked), :func:`to_protobuf`.

So both transports accept and refuse the same tensors with the same messages. Numbers stay
numpy arrays from the wire to the model (``np.frombuffer`` for binary data, one conversion for
typed contents and JSON lists).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve.core.errors import RequestError
from serve.core.graph import FEATURES
from serve.core.numbers import shown
from serve.runtime.predictor import Predictor
from serve.server.protocols import (
    Checked,
    as_rows,
    check_count,
    checked,
    json_list,
    on_unknown_of,
    parse_json,
)

DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
DATATYPE_OF = {np.dtype("float32"): "FP32", np.dtype("float64"): "FP64"}
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


@dataclass(slots=True)
class Tensor:
    """One input tensor as it arrived, not yet checked against the model: ``data`` is JSON's
    ``data`` or gRPC's typed contents, ``raw`` its binary bytes (either transport)."""

    name: Any
    datatype: Any
    shape: Any
    data: Any = None
    raw: memoryview | None = None


@dataclass(slots=True)
class InferRequest:
    """A v2 inference request, whatever carried it."""

    inputs: list[Tensor]
    outputs: dict[str, bool] | None = None  # asked by name -> binary; None: every output
    binary_outputs: bool = False  # outputs not asked by name go as binary data
    id: str | None = None
    on_unknown: str | None = None  # the request's policy for cells the model cannot take


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[tuple[str, np.ndarray, bool]] = field(default_factory=list)  # name, value, binary
    unpredictable: int = 0  # rows left NaN under on_unknown "nan" (response parameters)


# ----------------------------------------------------------------------- converters, in

def from_json(body: bytes, header_length: str | None) -> InferRequest:
    """An HTTP request body: JSON, or a JSON header of ``header_length`` bytes followed by the
    inputs' binary parts, in order (``Inference-Header-Content-Length``)."""
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
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError("expected an object with an 'inputs' list")
    inputs, offset = [], 0
    for item in header["inputs"]:
        if not isinstance(item, dict):
            raise RequestError("each input must be an object")
        tensor = Tensor(item.get("name"), item.get("datatype"), item.get("shape"),
                        item.get("data"))
        size = _parameters(item, "input").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise RequestError(f"binary_data_size {shown(size)} must be a whole number of "
                                   "bytes")
            if offset + size > len(binary):
                raise RequestError(f"input {shown(tensor.name)}: binary_data_size {size} does "
                                   f"not fit the {len(binary) - offset} bytes left after the "
                                   "JSON header")
            tensor.raw, offset = binary[offset:offset + size], offset + size
        inputs.append(tensor)
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data after the JSON header "
                           "belong to no input")
    params = _parameters(header, "request")
    binary_outputs = params.get("binary_data_output") is True
    outputs = None
    if "outputs" in header:
        asked = header["outputs"]
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise RequestError("'outputs' must be a list of objects")
        outputs = {}
        for o in asked:
            p = _parameters(o, "output")
            outputs[o.get("name")] = p["binary_data"] is True if "binary_data" in p \
                else binary_outputs
    return InferRequest(inputs, outputs, binary_outputs, _request_id(header.get("id")),
                        on_unknown_of(params.get("on_unknown")))


def from_protobuf(message: Any) -> InferRequest:
    """A gRPC ``ModelInferRequest``: each input's typed ``contents``, or its part of
    ``raw_input_contents`` (one per input, in order); outputs always go back raw."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise RequestError(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; "
                           "give one per input, in order")
    inputs = []
    for i, t in enumerate(message.inputs):
        tensor = Tensor(t.name, t.datatype, list(t.shape))
        if raw:
            if t.HasField("contents"):
                raise RequestError(f"input {t.name!r}: give raw_input_contents or contents, "
                                   "not both")
            tensor.raw = memoryview(raw[i])
        else:
            kind = _CONTENTS.get(t.datatype)  # another datatype is refused by the model
            if kind is not None:
                values = getattr(t.contents, kind)
                tensor.data = _utf8(values, t.name) if kind == "bytes_contents" else \
                    np.array(values, dtype=DATATYPES[t.datatype])
        inputs.append(tensor)
    outputs = {o.name: True for o in message.outputs} if message.outputs else None
    policy = None
    if "on_unknown" in message.parameters:
        param = message.parameters["on_unknown"]
        policy = param.string_param if param.WhichOneof("parameter_choice") == "string_param" \
            else param
    return InferRequest(inputs, outputs, True, _request_id(message.id) if message.id else None,
                        on_unknown_of(policy))


def _parameters(item: dict[str, Any], what: str) -> dict[str, Any]:
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(f"{what} 'parameters' must be an object")
    return params


def _request_id(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 1024):
        raise RequestError("request 'id' must be a string of at most 1,024 characters")
    return value


def _utf8(values: Any, name: str) -> list[str]:
    try:
        return [b.decode("utf-8") for b in values]
    except UnicodeDecodeError:
        raise RequestError(f"input {name!r}: a BYTES element is not UTF-8 text") from None


# ----------------------------------------------------------------------- the model's checks

def output_names(predictor: Predictor) -> list[str]:
    """The model's outputs: the prediction, and its intervals and contributions when exported
    with them."""
    return predictor.output_names


def request_rows(predictor: Predictor, request: InferRequest, *, max_rows: int) -> Checked:
    """The rows to predict, once every part of ``request`` is known to fit the model (under
    its ``on_unknown`` policy)."""
    if request.outputs is not None:
        check_outputs(list(request.outputs), output_names(predictor))
    if predictor.columns is not None:
        return _frame(predictor, request.inputs, max_rows, request.on_unknown)
    return _matrix(predictor, request.inputs, max_rows, request.on_unknown)


def check_outputs(asked: list[Any], names: list[str]) -> None:
    """Every output a request asks for must be one of the model's."""
    for name in asked:
        if name not in names:
            raise RequestError(f"unknown output {shown(name)}; the model's outputs are "
                               f"{', '.join(names)}")


def _matrix(predictor: Predictor, inputs: list[Tensor], max_rows: int,
            on_unknown: str | None) -> Checked:
    """A plain model's one input, ``features``: ``[rows, n_features]`` (or one row,
    ``[n_features]``) of FP32 or FP64."""
    if len(inputs) != 1:
        raise RequestError(f"expected exactly one input tensor named {FEATURES!r}, got "
                           f"{len(inputs)}")
    tensor = inputs[0]
    if tensor.name != FEATURES:
        raise RequestError(f"unknown input {shown(tensor.name)}; the model's input is "
                           f"{FEATURES!r}")
    datatype = tensor.datatype
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(f"input datatype {shown(datatype)} is not supported; send FP32 "
                           "(or FP64)")
    shape = tensor.shape
    if not _is_shape(shape, 2):
        raise RequestError(f"input shape {shown(shape)}: expected [rows, "
                           f"{predictor.n_features}]")
    if len(shape) == 1:
        shape = [1, shape[0]]
    if shape[1] != predictor.n_features:
        raise RequestError(f"input shape {shape}: the model takes {predictor.n_features} "
                           f"features per row ({', '.join(predictor.feature_names)})")
    check_count(shape[0], max_rows)
    flat = _numbers(tensor, datatype, shape[0] * shape[1], shape)
    rows = np.ascontiguousarray(flat.reshape(shape), dtype=predictor.dtype)
    return checked(predictor, rows, max_rows=max_rows, on_unknown=on_unknown)


def _frame(predictor: Predictor, inputs: list[Tensor], max_rows: int,
           on_unknown: str | None) -> Checked:
    """A tabular model's inputs: one tensor per raw column, ``[rows]`` or ``[rows, 1]``;
    ``BYTES`` for categorical columns (strings; binary: a 4-byte little-endian length before
    each element), FP32/FP64 for numeric ones (``null`` or NaN for a blank)."""
    kinds = {c.name: c.kind for c in predictor.columns or []}
    columns: dict[str, Any] = {}
    n_rows = None
    for tensor in inputs:
        name = tensor.name
        if not isinstance(name, str) or name not in kinds:
            raise RequestError(f"unknown input {shown(name)}; the model's inputs are its "
                               f"columns {', '.join(kinds)}")
        if name in columns:
            raise RequestError(f"input {name!r} is given twice")
        allowed = ("BYTES",) if kinds[name] == "categorical" else tuple(DATATYPES)
        if tensor.datatype not in allowed:
            raise RequestError(f"input {name!r}: datatype {shown(tensor.datatype)}; send "
                               f"{' or '.join(allowed)} for this {kinds[name]} column")
        shape = tensor.shape
        if not _is_shape(shape, 2) or shape[1:] not in ([], [1]):
            raise RequestError(f"input {name!r}: shape {shown(shape)}; expected [rows] or "
                               "[rows, 1]")
        check_count(shape[0], max_rows)
        if n_rows is not None and shape[0] != n_rows:
            raise RequestError(f"input {name!r} has {shape[0]} rows, the others {n_rows}")
        n_rows = shape[0]
        columns[name] = _column(tensor, shape[0])
    missing = [c for c in kinds if c not in columns]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}; the model takes one input "
                           f"per column: {', '.join(kinds)}")
    return as_rows(predictor, columns, max_rows=max_rows, on_unknown=on_unknown)


def _is_shape(shape: Any, most: int) -> bool:
    return isinstance(shape, list) and 1 <= len(shape) <= most and all(
        type(d) is int and d >= 0 for d in shape)


def _numbers(tensor: Tensor, datatype: str, count: int, shape: list[int]) -> np.ndarray:
    """A numeric tensor's ``count`` values as one flat array of its datatype."""
    dtype = DATATYPES[datatype]
    if tensor.raw is not None:
        want = count * dtype.itemsize
        if len(tensor.raw) != want:
            raise RequestError(f"input {tensor.name!r}: binary_data_size {len(tensor.raw)} for "
                               f"shape {shape} {datatype} must be {want}")
        return np.frombuffer(tensor.raw, dtype=dtype)
    if tensor.data is None:
        raise RequestError(f"input {shown(tensor.name)} has neither 'data' nor "
                           "binary_data_size")
    flat = tensor.data if isinstance(tensor.data, np.ndarray) else _json_numbers(tensor.data,
                                                                                 datatype)
    if flat.size != count:
        raise RequestError(f"input has {flat.size} values but shape {shape} needs {count}")
    return flat


def _json_numbers(data: Any, datatype: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except ValueError:
        raise RequestError("input data is ragged; send a flat list or rows of equal "
                           "length") from None
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise RequestError(f"input data must be numbers for datatype {datatype}")
    with np.errstate(over="ignore"):  # beyond the datatype's range becomes inf, refused later
        return arr.reshape(-1).astype(DATATYPES[datatype])


def _column(tensor: Tensor, n: int) -> np.ndarray | list[Any]:
    """One raw column of a tabular request: numbers as an array (NaN for a blank), BYTES as a
    list of strings (``None`` for a blank)."""
    name, datatype = tensor.name, tensor.datatype
    if tensor.raw is not None:
        if datatype == "BYTES":
            return _bytes_elements(tensor.raw, n, name)
        return _numbers(tensor, datatype, n, [n])
    data = tensor.data
    if isinstance(data, np.ndarray):  # gRPC's typed numbers
        if data.size != n:
            raise RequestError(f"input {name!r} has {data.size} values but shape [{n}] needs {n}")
        return data
    if not isinstance(data, list):
        raise RequestError(f"input {name!r} has neither a 'data' list nor binary_data_size")
    values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
    if len(values) != n:
        raise RequestError(f"input {name!r} has {len(values)} values but shape {tensor.shape} "
                           f"needs {n}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) or v is None for v in values):
            raise RequestError(f"input {name!r}: BYTES data must be strings")
    elif not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                 for v in values):
        raise RequestError(f"input {name!r}: {datatype} data must be numbers (null for a "
                           "blank)")
    return values


def _bytes_elements(raw: memoryview, n: int, name: str) -> list[str]:
    """The binary extension's BYTES tensor: each element a 4-byte little-endian length, then
    that many bytes of UTF-8."""
    data, values, pos = bytes(raw), [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RequestError(f"input {name!r}: BYTES data ends inside a length prefix")
        end = pos + 4 + int.from_bytes(data[pos:pos + 4], "little")
        if end > len(data):
            raise RequestError(f"input {name!r}: a BYTES element runs past its data")
        values.append(data[pos + 4:end])
        pos = end
    if len(values) != n:
        raise RequestError(f"input {name!r} has {len(values)} BYTES elements but its shape "
                           f"needs {n}")
    return _utf8(values, name)


# ----------------------------------------------------------------------- response, out

def response(request: InferRequest, outputs: Mapping[str, np.ndarray], model: str,
             version: str, unpredictable: int = 0) -> InferResponse:
    """The outputs the request asked for (all, by default), each marked binary or not, and the
    count of rows left NaN (on_unknown ``nan``)."""
    chosen = request.outputs if request.outputs is not None else \
        dict.fromkeys(outputs, request.binary_outputs)
    return InferResponse(model, version, request.id,
                         [(name, outputs[name], binary) for name, binary in chosen.items()],
                         unpredictable)


def to_json(answer: InferResponse) -> tuple[bytes, int | None]:
    """HTTP's body, and the JSON header's length when some outputs go as binary data."""
    result: dict[str, Any] = {"model_name": answer.model_name,
                              "model_version": answer.model_version, "outputs": []}
    if answer.id is not None:
        result["id"] = answer.id
    blobs = []
    for name, values, binary in answer.outputs:
        out: dict[str, Any] = {"name": name, "datatype": DATATYPE_OF[values.dtype],
                               "shape": list(values.shape)}
        if binary:
            raw = _little_endian(values)
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            flat = values.reshape(-1)
            out["data"] = json_list(flat) if answer.unpredictable else flat.tolist()
        result["outputs"].append(out)
    if answer.unpredictable:
        result["parameters"] = {"unpredictable_rows": answer.unpredictable}
    head = json.dumps(result).encode()
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)


def to_protobuf(answer: InferResponse, pb: Any) -> Any:
    """gRPC's ``ModelInferResponse`` (``pb``: the generated messages), outputs as
    ``raw_output_contents`` as Triton sends them."""
    message = pb.ModelInferResponse(model_name=answer.model_name,
                                    model_version=answer.model_version, id=answer.id or "")
    for name, values, _ in answer.outputs:
        message.outputs.add(name=name, datatype=DATATYPE_OF[values.dtype],
                            shape=list(values.shape))
        message.raw_output_contents.append(_little_endian(values))
    if answer.unpredictable:
        message.parameters["unpredictable_rows"].int64_param = answer.unpredictable
    return message


def _little_endian(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
