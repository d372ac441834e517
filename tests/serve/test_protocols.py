"""The protocol parsers are pure functions: every bad request of the wire tests' tables, run
in-process against them (fast), with the status and message the server would answer. The wire
tests keep the cases only HTTP can show (body limits, model names) and a few samples."""

from __future__ import annotations

import json

import pytest

from serve.core.errors import DataError
from serve.runtime.predictor import Predictor
from serve.server import dataplane
from serve.server import protocols as proto
from tests.serve.bad_requests import BAD, CLIENT_MISTAKES, WIRE_ONLY
from tests.serve.conftest import MODELS

MAX_ROWS = 1000


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(MODELS / "multi")


def answer(predictor: Predictor, path: str, body, content_type: str = "application/json"
           ) -> tuple[int, str]:
    """What the server answers: (200, "") or (status, error message)."""
    raw = body if isinstance(body, bytes) else (json.dumps(body) if isinstance(body, dict)
                                                else body).encode()
    try:
        if path.startswith("/v2/"):
            request = dataplane.from_json(raw, None)
            rows = dataplane.request_rows(predictor, request, max_rows=MAX_ROWS)
            dataplane.to_json(dataplane.response(request, {"prediction": predictor.predict(rows.rows)},
                                                 "multi", "1"))
        elif path == "/invocations":
            predictor.predict(proto.mlflow_parse(predictor, raw, content_type,
                                                 max_rows=MAX_ROWS).rows)
        else:
            predictor.predict(proto.v1_parse(predictor, raw, max_rows=MAX_ROWS).rows)
    except proto.RequestError as e:
        return e.status, e.message
    except DataError as e:  # the server's 422: a prediction that overflows
        return 422, str(e)
    return 200, ""


CASES = [c for c in BAD + CLIENT_MISTAKES if not any(w in c[3] for w in WIRE_ONLY)]


@pytest.mark.parametrize(("path", "body", "status", "message"), CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_requests_in_process(predictor, path, body, status, message):
    got, text = answer(predictor, path, body)
    assert got == status, text
    assert message in text


@pytest.mark.parametrize("body", ["x0,x0,x2,x3\n1,2,3,4\n", "x0,x1,x2,x3\n1,2,3\n",
                                  "x0,x1,x2,x3\n1,2,3,0x1F\n", "x0,x1,x2,x3\n1,2,3,true\n",
                                  "x0,x1,x2\n1,2,3\n", "\xff\xfe,\n", "", "x0,x1,x2,x3\n"])
def test_csv_bodies_follow_the_file_rules(predictor, body):
    got, text = answer(predictor, "/invocations", body.encode("latin-1"), "text/csv")
    assert got == 400 and text.startswith(("CSV body", "empty CSV body")), text


def test_good_requests_in_process(predictor):
    rows = [[1, 2, 3, 4], [0.5, 0, 0, 1]]
    for path, body in [("/predict", {"instances": rows}),
                       ("/predict", {"inputs": {f"x{i}": [r[i] for r in rows] for i in range(4)}}),
                       ("/v2/models/multi/infer", {"inputs": [{"name": "features", "datatype":
                                                               "FP32", "shape": [2, 4],
                                                               "data": sum(rows, [])}]}),
                       ("/invocations", {"dataframe_records": [dict(zip(["x0", "x1", "x2", "x3"],
                                                                        r)) for r in rows]})]:
        assert answer(predictor, path, body) == (200, ""), (path, body)
