"""Contributions (``linreg-export --contributions``) in every Python consumer of the runtime,
against a known answer built by hand. Runs without torch: the committed fixture ``explain`` is
the float32 formula ``y ~ C(city, Sum) * x2 + np.log1p(np.abs(x2))`` on tabular.csv
(``tests/fixtures/make_models.py``)."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest

from serve import Predictor
from tests.conftest import BIN
from tests.serve.conftest import MODELS

EXPLAIN = MODELS / "explain"
CSV = MODELS.parent / "tabular.csv"
TERMS = ["C(city, Sum)", "x2", "C(city, Sum):x2", "np.log1p(np.abs(x2))"]
NEW = [{"city": "Paris", "x2": 0.5}, {"city": "Rome", "x2": -1.0}, {"city": "Lyon", "x2": 2.0},
       {"city": "Rome", "x2": 3.5}]


def design(city: list[str], x2: np.ndarray) -> np.ndarray:
    """The formula's six design columns, by hand: Sum coding is Lyon (1, 0), Paris (0, 1),
    Rome (-1, -1)."""
    code = {"Lyon": (1.0, 0.0), "Paris": (0.0, 1.0), "Rome": (-1.0, -1.0)}
    s = np.array([code[c] for c in city])
    return np.column_stack([s[:, 0], s[:, 1], x2, s[:, 0] * x2, s[:, 1] * x2,
                            np.log1p(np.abs(x2))])


@pytest.fixture(scope="module")
def known() -> dict[str, np.ndarray]:
    """The contributions of NEW from the coefficients and the training rows' means, in
    float64: each term sums its columns' coefficient x (value - mean)."""
    with CSV.open() as f:
        rows = list(csv.DictReader(f))
    train = design([r["city"] for r in rows], np.array([float(r["x2"]) for r in rows]))
    m = json.loads((EXPLAIN / "model.json").read_text())["model"]
    coef, b = np.array(m["coef_"][0]), m["intercept_"][0]
    means = train.mean(axis=0)
    np.testing.assert_allclose(m["feature_means"], means, rtol=1e-12)
    X = design([r["city"] for r in NEW], np.array([r["x2"] for r in NEW]))
    per_column = coef * (X - means)
    share = np.column_stack([per_column[:, [0, 1]].sum(1), per_column[:, 2],
                             per_column[:, [3, 4]].sum(1), per_column[:, 5]])
    return {"contributions": share, "baseline": np.array([b + coef @ means]),
            "prediction": X @ coef + b, "mean_prediction": (train @ coef + b).mean()}


def close32(got, want) -> None:
    """float32 against float64: to 1e-6 of the prediction's scale."""
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=0,
                               atol=1e-6 * max(1.0, float(np.abs(want).max())) * 4)


def test_the_baseline_is_the_mean_prediction_over_the_training_rows(known):
    p = Predictor.load(EXPLAIN)
    assert p.contributions["terms"] == TERMS
    np.testing.assert_allclose(p.contributions["baseline"], [known["mean_prediction"]],
                               rtol=1e-12)


def test_predictor_explain_equals_the_known_answer_and_adds_up(known):
    p = Predictor.load(EXPLAIN)
    e = p.explain(NEW)
    assert e.terms == TERMS and e.target_names == ["y"] and len(e) == 4
    assert e.contributions.shape == (4, 1, 4) and e.contributions.dtype == np.float32
    close32(e.contributions[:, 0, :], known["contributions"])
    close32(e.prediction[:, 0], known["prediction"])
    np.testing.assert_array_equal(e.prediction, p.predict(NEW))
    total = e.baseline[0] + e.contributions[:, 0, :].astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(total, e.prediction[:, 0], rtol=1e-6)
    columns = e.columns()
    assert list(columns) == ["y", "y_baseline", *(f"y_contrib_{t}" for t in TERMS)]
    assert list(e.to_pandas().columns) == list(columns)
    assert e.records()[0] == pytest.approx(dict(zip(TERMS, known["contributions"][0])),
                                           abs=1e-5)


def test_a_row_left_unpredicted_is_nan_in_every_output():
    e = Predictor.load(EXPLAIN).explain([{"city": "Nice", "x2": 1.0}, NEW[0]],
                                        on_unknown="nan")
    assert np.isnan(e.prediction[0]).all() and np.isnan(e.contributions[0]).all()
    assert np.isfinite(e.contributions[1]).all()
    assert e.records()[0] == dict.fromkeys(TERMS)
    assert np.isnan(e.columns()["y_baseline"][0])


def test_explain_refuses_a_model_without_contributions():
    from serve.core.errors import ModelError

    with pytest.raises(ModelError, match="this model has no contributions; export it with "
                                         "linreg-export --contributions"):
        Predictor.load(MODELS / "formula").explain(NEW)


def test_bare_onnxruntime_has_the_output_and_the_metadata(known):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(EXPLAIN / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["prediction", "contributions"]
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["linreg.contributions"])
    assert meta["terms"] == TERMS and meta["targets"] == ["y"]
    pred, share = sess.run(None, {"city": np.array([[r["city"]] for r in NEW], dtype=object),
                                  "x2": np.array([[r["x2"]] for r in NEW], np.float32)})
    assert share.shape == (4, 4)
    close32(share, known["contributions"])
    np.testing.assert_allclose(meta["baseline"][0] + share.astype(np.float64).sum(1),
                               pred[:, 0], rtol=1e-6)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_linreg_predict_writes_the_baseline_and_each_term(tmp_path, known, fmt):
    src = tmp_path / "new.csv"
    src.write_text("city,x2\n" + "".join(f"{r['city']},{r['x2']}\n" for r in NEW))
    out = tmp_path / f"out.{fmt}"
    res = subprocess.run([BIN / "linreg-predict", EXPLAIN, src, "-o", out, "--contributions",
                          "-q"], capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    if fmt == "csv":
        with out.open() as f:
            table = list(csv.reader(f))
        header, values = table[0], np.array(table[1:], dtype=np.float64)
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        header, values = t.column_names, np.column_stack([c.to_numpy() for c in t.columns])
    assert header == ["y", "y_baseline", *(f"y_contrib_{t}" for t in TERMS)]
    close32(values[:, 2:], known["contributions"])
    np.testing.assert_allclose(values[:, 1] + values[:, 2:].sum(axis=1), values[:, 0],
                               rtol=1e-6)


def test_linreg_predict_refuses_contributions_the_model_lacks(tmp_path):
    src = tmp_path / "new.csv"
    src.write_text("city,x2\nParis,0.5\n")
    res = subprocess.run([BIN / "linreg-predict", MODELS / "formula", src, "-o",
                          tmp_path / "o.csv", "--contributions"], capture_output=True)
    assert res.returncode == 1 and not (tmp_path / "o.csv").exists()
    assert res.stderr.decode() == (f"linreg-predict: error: {MODELS / 'formula' / 'model.onnx'}"
                                   ": this model has no contributions; export it with "
                                   "linreg-export --contributions\n")


@pytest.fixture(scope="module")
def http():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings

    app = create_app(Repository.open(EXPLAIN), ServerSettings())
    with TestClient(app) as client:
        yield client


def test_v1_and_mlflow_add_the_contributions_by_term(http, known):
    for path, body in (("/predict", {"instances": NEW}),
                       ("/invocations", {"dataframe_records": NEW})):
        answer = http.post(path, json=body)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert list(got) == ["predictions", "contributions", "baseline"]
        assert got["baseline"] == pytest.approx(known["baseline"][0], rel=1e-12)
        assert [list(r) for r in got["contributions"]] == [TERMS] * 4
        close32([[r[t] for t in TERMS] for r in got["contributions"]],
                known["contributions"])
    got = http.post("/predict?on_unknown=nan",
                    json={"instances": [{"city": "Nice", "x2": 1.0}, NEW[0]]}).json()
    assert got["predictions"][0] is None and got["contributions"][0] == dict.fromkeys(TERMS)
    assert got["unpredictable_rows"] == 1


def test_v2_returns_the_output_and_its_metadata(http, known):
    v2 = {"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [4], "data": [r["city"] for r in NEW]},
        {"name": "x2", "datatype": "FP32", "shape": [4], "data": [r["x2"] for r in NEW]}]}
    answer = http.post("/v2/models/explain/infer", json=v2).json()
    out = {o["name"]: o for o in answer["outputs"]}
    assert list(out) == ["prediction", "contributions"]
    assert out["contributions"]["shape"] == [4, 4]
    close32(np.reshape(out["contributions"]["data"], (4, 4)), known["contributions"])
    meta = http.get("/v2/models/explain").json()
    assert meta["outputs"][-1] == {"name": "contributions", "datatype": "FP32",
                                   "shape": [-1, 4]}
    assert meta["parameters"]["contributions"]["terms"] == TERMS
