"""Missing values as R and pandas write them (issue #22): ``NA``, ``N/A``, ``NaN``, ``null``, ...
are blanks in training (in memory, streamed, CSV and Parquet) and at prediction in every
consumer, because the tokens travel in the model: ``model.json`` (``encoding.na_values``),
``model.onnx``'s metadata (``linreg.na_values``) and its graph, which maps them in categorical
columns. The fixture ``rstyle`` is ``tests/fixtures/rstyle.csv`` (R's ``write.csv`` of the
tabular table: ``NA`` in the city, x1 and target columns) trained with ``--impute mean``."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

from serve import Predictor
from serve.core.columns import NA_VALUES
from tests.conftest import BIN
from tests.serve.conftest import MODELS

RSTYLE = MODELS / "rstyle"
CSV = MODELS.parent / "rstyle.csv"

# The same rows with a blank written four ways: as R writes it, as other tokens, and empty.
AS_R = [{"city": "NA", "x1": "NA", "x2": 0.5}, {"city": "Rome", "x1": "N/A", "x2": -1.0},
        {"city": "null", "x1": 7.5, "x2": 2.0}, {"city": "Paris", "x1": "NaN", "x2": 0.0}]
AS_BLANKS = [{"city": None, "x1": None, "x2": 0.5}, {"city": "Rome", "x1": None, "x2": -1.0},
             {"city": "", "x1": 7.5, "x2": 2.0}, {"city": "Paris", "x1": math.nan, "x2": 0.0}]


def _blanks_for_na(text: str) -> str:
    """The CSV with every NA cell written as an empty one."""
    return "\n".join(",".join("" if cell == "NA" else cell for cell in line.split(","))
                     for line in text.splitlines()) + "\n"


@pytest.fixture(scope="module")
def blank_style(tmp_path_factory):
    path = tmp_path_factory.mktemp("blank") / "blank.csv"
    path.write_text(_blanks_for_na(CSV.read_text()))
    return path


def _fit(data, tmp_path, name: str, **kw):
    """model.json of a float64 exact fit with --impute mean (``streamed``: in 50-row chunks)."""
    from trainer.encode import EncodeConfig
    from trainer.fit import TrainConfig
    from trainer.train import train
    from trainer.train_streamed import train_streamed

    args = dict(out=tmp_path / name, config=TrainConfig(solver="lstsq", dtype="float64"),
                encoding=EncodeConfig(impute="mean", **kw))
    folder, _ = train_streamed(data, batch_rows=50, **args) if name == "streamed" else \
        train(data, **args)
    return json.loads((folder / "model.json").read_text())


def test_the_fixture_learned_na_as_blank():
    m = json.loads((RSTYLE / "model.json").read_text())
    assert m["encoding"]["na_values"] == list(NA_VALUES)
    city, x1, _ = m["columns"]
    assert city["levels"][-1] == "" and city["blanks"] > 0  # NA is the blank level, last
    assert "NA" not in city["levels"] and x1["blanks"] > 0
    n_na_targets = sum(1 for line in CSV.read_text().splitlines() if line.endswith(",NA"))
    assert n_na_targets > 0 and m["data"]["dropped_rows"] == n_na_targets
    assert any(w.startswith(f"dropped {n_na_targets} row(s) with a blank target")
               for w in m["warnings"])


def test_training_on_r_csv_equals_training_on_blanks(tmp_path, blank_style):
    pytest.importorskip("torch")
    r = _fit(CSV, tmp_path, "r")
    blank = _fit(blank_style, tmp_path, "blank")
    assert r["columns"] == blank["columns"] and r["features"] == blank["features"]
    np.testing.assert_allclose(r["model"]["coef_"], blank["model"]["coef_"], rtol=1e-12)
    np.testing.assert_allclose(r["model"]["intercept_"], blank["model"]["intercept_"],
                               rtol=1e-12)
    assert r["data"]["dropped_rows"] == blank["data"]["dropped_rows"] > 0


def test_streamed_and_parquet_training_read_na_alike(tmp_path):
    pytest.importorskip("torch")
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    memory = _fit(CSV, tmp_path, "memory")
    streamed = _fit(CSV, tmp_path, "streamed")
    # Parquet written with every cell as text, "NA" included (as a careless export writes it)
    table = pacsv.read_csv(CSV, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("city", "x1", "x2", "y")}, null_values=[]))
    assert "NA" in table.column("x1").to_pylist()
    pq.write_table(table, tmp_path / "r.parquet")
    parquet = _fit(tmp_path / "r.parquet", tmp_path, "parquet")
    for other in (streamed, parquet):
        for got, want in zip(other["columns"], memory["columns"]):  # a mean, summed otherwise
            assert got == {**want, **({"fill": pytest.approx(want["fill"], rel=1e-12)}
                                      if "fill" in want else {})}
        np.testing.assert_allclose(other["model"]["coef_"], memory["model"]["coef_"],
                                   rtol=1e-9)
        assert other["data"]["dropped_rows"] == memory["data"]["dropped_rows"]


def test_na_values_none_reads_na_as_text(tmp_path):
    res = subprocess.run([str(BIN / "linreg-train"), str(CSV), "--na-values", "",
                          "--impute", "mean", "--out", str(tmp_path / "m")],
                         capture_output=True, timeout=120)
    assert res.returncode == 1
    row = next(i for i, line in enumerate(CSV.read_text().splitlines()) if line.endswith(",NA"))
    assert res.stderr.decode() == (
        f"linreg-train: error: {CSV}: row {row}, column 'y': 'NA' is not a number; 'y' is the "
        "target: the last column, by default (choose the target with --target NAME)\n")
    assert not (tmp_path / "m").exists()


def test_na_values_of_ones_own(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "sas.csv"
    data.write_text("g,x,y\na,1,2.0\nb,.,3.1\n.,3,4.2\na,4,.\nb,5,6.1\na,6,7.3\nb,7,7.9\n")
    m = _fit(data, tmp_path, "sas", na_values=(".",))
    g, x = m["columns"]
    assert g["levels"] == ["a", "b", ""] and x["blanks"] == 1
    assert m["data"]["dropped_rows"] == 1 and m["encoding"]["na_values"] == ["."]


def test_predictor_reads_the_tokens_as_blanks():
    p = Predictor.load(RSTYLE)
    assert p.na_values == frozenset(NA_VALUES)
    want = p.predict(AS_BLANKS)
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(p.predict(AS_R), want)
    np.testing.assert_array_equal(p.predict({k: [r[k] for r in AS_R] for k in AS_R[0]}), want)


def test_the_graph_itself_maps_the_tokens():
    import onnxruntime as ort

    p = Predictor.load(RSTYLE)
    sess = ort.InferenceSession(str(RSTYLE / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(cities):
        n = len(cities)
        return sess.run(["prediction"], {"city": np.array(cities, dtype=object).reshape(-1, 1),
                                         "x1": np.full((n, 1), 9.0), "x2": np.zeros((n, 1))})[0]

    tokens = ["NA", "N/A", "null", "NaN", "#N/A", "None"]
    np.testing.assert_array_equal(run(tokens), run([""] * len(tokens)))
    np.testing.assert_array_equal(run(["Rome"]), p.predict([{"city": "Rome", "x1": 9, "x2": 0}]))


def test_a_model_from_before_the_tokens_keeps_na_a_text():
    p = Predictor.load(MODELS / "tabular")
    assert p.na_values == frozenset()
    with pytest.raises(ValueError, match="row 1, column 'city': level 'NA' was not seen"):
        p.predict([{"city": "NA", "x1": 1.0, "x2": 0.0}])


def _csv(rows: list[dict]) -> str:
    def cell(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return "city,x1,x2\n" + "".join(",".join(cell(r[k]) for k in ("city", "x1", "x2")) + "\n"
                                    for r in rows)


def test_linreg_predict_reads_r_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "r.csv").write_text(_csv(AS_R))
    pq.write_table(pa.table({k: [str(r[k]) for r in AS_R] for k in ("city", "x1", "x2")}),
                   tmp_path / "r.parquet")
    want = Predictor.load(RSTYLE).predict(AS_BLANKS)
    for name in ("r.csv", "r.parquet"):
        res = subprocess.run([str(BIN / "linreg-predict"), str(RSTYLE), str(tmp_path / name),
                              "-o", str(tmp_path / "out.csv"), "--force"],
                             capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr.decode()
        got = np.loadtxt(tmp_path / "out.csv", skiprows=1, delimiter=",").reshape(-1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_http_reads_the_tokens_in_every_protocol():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings

    want = Predictor.load(RSTYLE).predict(AS_BLANKS)[:, 0]
    app = create_app(Repository.open(RSTYLE), ServerSettings())
    with TestClient(app) as http:
        v2 = http.post("/v2/models/rstyle/infer", json={"inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [4, 1],
             "data": [r["city"] for r in AS_R]},
            {"name": "x1", "datatype": "FP64", "shape": [4, 1],
             "data": [None, None, 7.5, None]},
            {"name": "x2", "datatype": "FP64", "shape": [4, 1],
             "data": [r["x2"] for r in AS_R]}]})
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], want, rtol=1e-12)
        v1 = http.post("/v1/models/rstyle:predict", json={"instances": AS_R})
        assert v1.status_code == 200, v1.text
        np.testing.assert_allclose(v1.json()["predictions"], want, rtol=1e-12)
        mlflow = http.post("/invocations", content=_csv(AS_R),
                           headers={"Content-Type": "text/csv"})
        assert mlflow.status_code == 200, mlflow.text
        np.testing.assert_allclose(mlflow.json()["predictions"], want, rtol=1e-12)
