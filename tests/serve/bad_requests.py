"""The tables of bad requests: run in-process against the parsers (test_protocols.py) and, for
a sample and the cases only HTTP can show, over the wire (test_server*.py)."""

from __future__ import annotations

DEEP = "[" * 5000 + "]" * 5000
HUGE_INT = "1" * 5000
ROUTES = ["/predict", "/v1/models/multi:predict", "/v2/models/multi/infer", "/invocations"]


# The requests that once got a 500, and their kin: each must be a 4xx with a JSON error.
CLIENT_MISTAKES = [
    *[(route, DEEP, 400, "JSON nested too deeply") for route in ROUTES],
    *[(route, '{"instances": ' + "[" * 900 + "1" + "]" * 900 + "}", 400, "") for route in
      ("/predict", "/invocations")],
    ("/predict", '{"instances": [[' + HUGE_INT + ', 1, 2, 3]]}', 400, "row 1, column 'x0': inf"),
    ("/predict", '{"instances": [[1e400, 1, 2, 3]]}', 400, "row 1, column 'x0': inf"),
    ("/predict", '{"instances": [{"x0": 1e400, "x1": 1, "x2": 2, "x3": 3}]}', 400, "inf"),
    ("/predict", '{"inputs": {"x0": [1e400], "x1": [1], "x2": [2], "x3": [3]}}', 400, "inf"),
    ("/predict", '{"inputs": {"x0": [' + HUGE_INT + '], "x1": [1], "x2": [2], "x3": [3]}}', 400,
     "inf"),
    ("/invocations", '{"instances": [[1e400, 1, 2, 3]]}', 400, "inf"),
    ("/invocations", '{"inputs": [[1, -1e400, 2, 3]]}', 400, "-inf"),
    ("/invocations", '{"dataframe_records": [{"x0": 1e400, "x1": 1, "x2": 2, "x3": 3}]}', 400,
     "inf"),
    ("/invocations", '{"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"], "data": '
     '[[1e400, 1, 2, 3]]}}', 400, "inf"),
    ("/invocations", '{"dataframe_split": {"columns": ["x0", "x0", "x2", "x3"], "data": '
     '[[1, 1, 2, 3]]}}', 400, "column 'x0' appears twice"),
    ("/invocations", '{"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}', 400,
     "'columns' must be a list of names"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": ["FP32"], '
     '"shape": [1, 4], "data": [1, 2, 3, 4]}]}', 400, 'input datatype ["FP32"] is not supported'),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": {"a": 1}, '
     '"shape": [1, 4], "data": [1, 2, 3, 4]}]}', 400, "is not supported"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [true, 4], "data": [1, 2, 3, 4]}]}', 400, "input shape [true, 4]"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [1, ' + HUGE_INT + '], "data": [1, 2, 3, 4]}]}', 400, "input shape"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [1, 4], "data": [1e400, 2, 3, 4]}]}', 400, "inf is not allowed"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [1, 4], "data": [1, 2, 3, 4], "parameters": [1]}]}', 400,
     "'parameters' must be an object"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [1, 4], "data": [1, 2, 3, 4], "parameters": {"binary_data_size": 1.5}}]}', 400,
     "binary_data_size 1.5 must be a whole number"),
    ("/v2/models/multi/infer", '{"id": {"x": 1}, "inputs": [{"name": "features", "datatype": '
     '"FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}', 400, "'id' must be a string"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", '
     '"shape": [1, 4], "data": [1, 2, 3, 4]}], "parameters": "x"}', 400, "must be an object"),
    ("/v2/models/multi/infer", '{"inputs": [{"name": "features", "datatype": "FP32", "shape": '
     '[1, 4], "data": [1, 2, 3, 4]}], "outputs": [{"name": "prediction", "parameters": 7}]}',
     400, "output 'parameters' must be an object"),
    ("/predict", b'{"instances": [[1, 2, 3, "\xff"]]}', 400, "not UTF-8"),
    ("/predict", '{"instances": [[1, 2, 3, "1_000"]]}', 400, "'1_000' is not a number"),
    ("/predict", '{"instances": [[3e38, 3e38, 3e38, 3e38]]}', 422, "overflows float32"),
]


V2 = "/v2/models/multi/infer"


def _v2(shape, data, datatype="FP32", name="features"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


BAD = [
    ("/predict", {"instances": [[1, 2, 3]]}, 400,
     "instances: expected 4 features per row (x0, x1, x2, x3), got 3"),
    ("/predict", {"instances": [{"x0": 1, "x1": 2, "x2": 3}]}, 400,
     "instances: row 1: missing feature(s) x3"),
    ("/predict", {"inputs": {"x0": [1], "x1": [1], "x2": [1], "x9": [1]}}, 400,
     "inputs: missing feature column(s) x3; the model needs x0, x1, x2, x3 (unknown: x9)"),
    ("/predict", {"instances": [[1, 2, "three", 4]]}, 400,
     "instances: row 1, column 'x2': 'three' is not a number"),
    ("/predict", '{"instances": [[1, 2, NaN, 4]]}', 400,
     "instances: row 1, column 'x2': NaN is not allowed"),
    ("/predict", {"instances": []}, 400, "instances: no rows to predict"),
    ("/predict", "", 400, "empty request body; send JSON"),
    ("/predict", "{not json", 400, "request body is not valid JSON"),
    ("/predict", {"rows": []}, 400, 'expected {"instances": [[...], ...]} or {"inputs": ...}'),
    ("/predict", {"instances": [[0, 0, 0, 0]] * 1001}, 413,
     "1,001 rows is more than the limit of 1,000 per request (--max-rows)"),
    ("/predict", {"instances": [[0.123456789] * 4] * 5000}, 413,
     "is more than the limit of 200,000 (--max-body-bytes)"),
    (V2, _v2([1, 4], [1, 2, 3, 4], "INT64"), 400,
     "input datatype 'INT64' is not supported; send FP32 (or FP64)"),
    (V2, _v2([1, 4], ["a", "b", "c", "d"], "BYTES"), 400, "input datatype 'BYTES' is not supported"),
    (V2, _v2([1, 4], [1, 2, 3]), 400, "input has 3 values but shape [1, 4] needs 4"),
    (V2, _v2([1, 3], [1, 2, 3]), 400, "input shape [1, 3]: the model takes 4 features per row"),
    (V2, _v2([1, 4], [1, 2, 3, 4], name="x"), 400, "unknown input 'x'; the model's input is "
     "'features'"),
    (V2, _v2([1, 4], [1, "a", 3, 4]), 400, "input data must be numbers for datatype FP32"),
    (V2, _v2([1, 4], [1, float("inf"), 3, 4]), 400, "row 1, column 'x1': inf is not allowed"),
    (V2, _v2([2000, 4], [0] * 8000), 413, "2,000 rows is more than the limit of 1,000"),
    ("/v2/models/other/infer", _v2([1, 4], [1, 2, 3, 4]), 404,
     "unknown model 'other'; this server serves 'multi'"),
    ("/v2/models/multi/versions/7/infer", _v2([1, 4], [1, 2, 3, 4]), 404,
     "unknown version '7' of model 'multi'; it has '1'"),
    ("/invocations", {"dataframe_split": {"columns": ["x0"], "data": [[1, 2]]}}, 400,
     "dataframe_split: every row of 'data' needs one value per column"),
    ("/invocations", {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, 400,
     "expected exactly one of dataframe_split, dataframe_records, instances or inputs"),
]


WIRE_ONLY = ("--max-body-bytes", "unknown model", "unknown version")  # decided by HTTP


def wire_sample(table: list[tuple], every: int) -> list[tuple]:
    """The HTTP-only cases of ``table`` and every ``every``-th of the others."""
    return [c for i, c in enumerate(table) if any(w in c[3] for w in WIRE_ONLY) or i % every == 0]
