"""--formula (issue #23, first part): a formula as statsmodels takes it, parsed by patsy and
compiled into model.onnx. On data with numeric and categorical columns, a formula using every
supported term gives statsmodels' ``smf.ols`` coefficients by name to 1e-8 (float64), and every
consumer fed raw rows (Predictor, bare onnxruntime, linreg-predict, HTTP) gives statsmodels'
``predict`` on them; a term outside the set is refused in one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.trainer.commands import export, train

smf = pytest.importorskip("statsmodels.formula.api")
pd = pytest.importorskip("pandas")

FORMULA = ("y ~ a * C(city, Treatment(reference='Rome')) + a:b + I(a**2) + np.log(b) "
           "+ np.log1p(c) + np.exp(c / 10) + np.sqrt(b) + np.abs(a - 5) + center(d) "
           "+ standardize(c)")
NEW = {"city": ["Paris", "Rome", "Lyon", "Paris"], "a": [3.0, 7.5, 1.2, 9.9],
       "b": [2.0, 4.1, 1.1, 3.3], "c": [0.5, 8.0, 3.3, 1.0], "d": [-1.0, 2.5, 0.0, 4.0]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, object, Path]:
    folder = tmp_path_factory.mktemp("formula")
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({"city": rng.choice(["Lyon", "Paris", "Rome"], n),
                       "a": rng.uniform(1, 10, n).round(6), "b": rng.uniform(1, 5, n).round(6),
                       "c": rng.uniform(0, 9, n).round(6), "d": rng.normal(size=n).round(6)})
    df["y"] = (2 + 0.5 * df.a + 3 * np.log(df.b) + 1.5 * (df.city == "Paris") + 0.2 * df.a * df.b
               - 0.03 * df.a**2 + 0.4 * df.d + rng.normal(size=n)).round(6)
    df.to_csv(folder / "f.csv", index=False)
    train(folder / "f.csv", "--formula", FORMULA, "--solver", "lstsq", "--dtype", "float64",
          "--out", folder / "m", "-q")
    export(folder / "m", "-q")
    return folder / "m", smf.ols(FORMULA, pd.read_csv(folder / "f.csv")).fit(), folder


def test_coefficients_equal_statsmodels_by_name(fitted):
    model, reference, _ = fitted
    m = json.loads((model / "model.json").read_text())
    ours = dict(zip(m["features"], m["model"]["coef_"][0]))
    ours["Intercept"] = m["model"]["intercept_"][0]
    assert set(ours) == set(reference.params.index)
    for name, value in reference.params.items():
        assert ours[name] == pytest.approx(value, rel=1e-8, abs=1e-10), name
    assert m["formula"]["formula"] == FORMULA and m["formula"]["response"] == "y"
    assert [c["name"] for c in m["columns"]] == ["a", "city", "b", "c", "d"]
    stats = m["statistics"][0]
    np.testing.assert_allclose(stats["std_err"][1:], [reference.bse[n] for n in m["features"]],
                               rtol=1e-8)


def test_every_consumer_predicts_what_statsmodels_does(fitted, tmp_path):
    import onnxruntime as ort

    from serve import Predictor

    model, reference, _ = fitted
    want = reference.predict(pd.DataFrame(NEW)).to_numpy().reshape(-1, 1)
    p = Predictor.load(model)
    np.testing.assert_allclose(p.predict(NEW), want, rtol=1e-10)
    sess = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {k: (np.array(v, dtype=object) if k == "city" else np.array(v)).reshape(-1, 1)
             for k, v in NEW.items()}
    np.testing.assert_allclose(sess.run(["prediction"], feeds)[0], want, rtol=1e-10)
    pd.DataFrame(NEW).to_csv(tmp_path / "new.csv", index=False)
    res = run_script("linreg-predict", model, tmp_path / "new.csv", "-o", tmp_path / "out.csv")
    assert res.returncode == 0, res.stderr.decode()
    np.testing.assert_allclose(np.loadtxt(tmp_path / "out.csv", skiprows=1).reshape(-1, 1),
                               want, rtol=1e-10)


def test_http_takes_raw_columns(fitted):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings

    model, reference, _ = fitted
    want = reference.predict(pd.DataFrame(NEW)).to_numpy()
    with TestClient(create_app(Repository.open(model), ServerSettings())) as http:
        records = [dict(zip(NEW, r)) for r in zip(*NEW.values())]
        answer = http.post("/v1/models/m:predict", json={"instances": records})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], want, rtol=1e-10)
        bad = http.post("/v1/models/m:predict", json={"instances": [{**records[0],
                                                                      "city": "Nice"}]})
        assert bad.status_code == 400 and "level 'Nice' was not seen in training" in \
            bad.json()["error"]
        nan = http.post("/v1/models/m:predict?on_unknown=nan",
                        json={"instances": [{**records[0], "city": "Nice"}, records[1]]})
        assert nan.json()["predictions"][0] is None and nan.json()["unpredictable_rows"] == 1


def test_no_intercept_codes_every_level(fitted, tmp_path):
    _, _, folder = fitted
    formula = "y ~ C(city) + a - 1"
    train(folder / "f.csv", "--formula", formula, "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "m", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    reference = smf.ols(formula, pd.read_csv(folder / "f.csv")).fit()
    assert not m["model"]["bias"] and m["features"] == list(reference.params.index)
    np.testing.assert_allclose(m["model"]["coef_"][0], reference.params.to_numpy(), rtol=1e-8)


@pytest.mark.parametrize("formula, message", [
    ("y ~ bs(a, df=4)", "--formula: bs() in bs(a, df=4) is not supported; use numeric columns, "
     "C(column), interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, np.sqrt, "
     "np.abs, center() or standardize()"),
    ("y ~ C(city, [[1], [2], [3]])", "--formula: C(city, [[1], [2], [3]]) (a coding other "
     "than patsy's Treatment, T, Sum, Diff, Helmert, Poly) is not supported; use numeric "
     "columns, C(column), interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, "
     "np.exp, np.sqrt, np.abs, center() or standardize()"),
    ("center(y) ~ a", "--formula: the response center(y): a response is a column or a "
     "function of columns is not supported; use numeric columns, C(column), interactions "
     "(a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, np.sqrt, np.abs, center() or "
     "standardize()"),
    ("y ~ a + zzz", "{csv}: --formula reads column 'zzz', which is not in the file; the columns "
     "are city, a, b, c, d, y"),
])
def test_what_it_cannot_compile_is_one_line(fitted, tmp_path, formula, message):
    _, _, folder = fitted
    res = train(folder / "f.csv", "--formula", formula, "--solver", "lstsq", "--out",
                tmp_path / "m", code=1)
    assert res.stderr.strip().splitlines()[-1] == "linreg-train: error: " + message.format(
        csv=folder / "f.csv")
    assert not (tmp_path / "m").exists()


def test_formula_with_other_column_flags_or_streaming_is_refused(fitted, tmp_path):
    _, _, folder = fitted
    res = train(folder / "f.csv", "--formula", "y ~ a", "--target", "y", "--out",
                tmp_path / "m", code=1)
    assert res.stderr.strip().endswith("--formula names the response and the terms: drop "
                                       "--target, --features, --exclude and --sample-weight")
    res = train(folder / "f.csv", "--formula", "y ~ a", "--batch-rows", "50", "--out",
                tmp_path / "m", code=1)
    assert res.stderr.strip().endswith("--formula trains in memory for now: drop --batch-rows, "
                                       "--nproc and --val-data, or give a file under "
                                       "--max-memory")


def test_a_number_coded_category_is_named_as_statsmodels_names_it(tmp_path):
    cars = Path(__file__).resolve().parents[2] / "examples" / "data" / "cars.csv"
    formula = ("mpg ~ np.log(weight) + I(year - 70) + C(origin, Treatment(reference=1)) "
               "* I(year - 70)")
    train(cars, "--formula", formula, "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "m", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    reference = smf.ols(formula, pd.read_csv(cars)).fit()
    assert ["Intercept", *m["features"]] == list(reference.params.index)  # [T.2], not np.int64
    np.testing.assert_allclose(m["model"]["coef_"][0], reference.params.to_numpy()[1:],
                               rtol=1e-8)


@pytest.mark.parametrize("formula", [
    "np.log(y) ~ C(city, Sum) * a + np.sqrt(b)",
    "I(y / 10) ~ C(city, Helmert) + C(city, Diff):c + d",
])
def test_other_codings_and_a_transformed_response(fitted, tmp_path, formula):
    from serve import Predictor

    _, _, folder = fitted
    train(folder / "f.csv", "--formula", formula, "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    reference = smf.ols(formula, pd.read_csv(folder / "f.csv")).fit()
    assert m["targets"] == [formula.split(" ~")[0]]  # the scale it predicts on, by name
    ours = dict(zip(m["features"], m["model"]["coef_"][0]))
    ours["Intercept"] = m["model"]["intercept_"][0]
    assert set(ours) == set(reference.params.index)
    for name, value in reference.params.items():
        assert ours[name] == pytest.approx(value, rel=1e-8, abs=1e-10), name
    p = Predictor.load(tmp_path / "m")
    assert p.metadata["linreg.response"] == formula.split(" ~")[0]
    np.testing.assert_allclose(p.predict(NEW)[:, 0], reference.predict(pd.DataFrame(NEW)),
                               rtol=1e-10)
