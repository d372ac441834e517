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
        params = http.get("/v2/models/m").json()["parameters"]
        assert params["coefficient_names"] == list(reference.params.index)[1:]
        assert (params["formula"], params["response"]) == (FORMULA, "y")


@pytest.mark.parametrize("batching", [None, 2000])
def test_http_a_row_the_formula_gives_no_number_for(fitted, batching):
    """np.log(b) of b = -1: that request's 422 (or null under on_unknown=nan), never a 500,
    and never the failure of other requests batched with it."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings

    model, reference, _ = fitted
    records = [dict(zip(NEW, r)) for r in zip(*NEW.values())]
    bad = [records[0], {**records[1], "b": -1.0}]
    settings = ServerSettings(max_batch_delay_us=batching)
    with TestClient(create_app(Repository.open(model), settings)) as http:
        answer = http.post("/v1/models/m:predict", json={"instances": bad})
        assert answer.status_code == 422 and answer.json()["error"] == (
            f"row 2: the formula {FORMULA!r} gives no number for these values (a function "
            "outside its domain, e.g. np.log of 0, or a value outside the range bs() was fit "
            "on); on_unknown='nan' predicts NaN for it")
        nan = http.post("/v1/models/m:predict?on_unknown=nan", json={"instances": bad}).json()
        assert nan["predictions"][1] is None and nan["unpredictable_rows"] == 1
        assert nan["predictions"][0] == pytest.approx(
            reference.predict(pd.DataFrame(records[:1]))[0], rel=1e-10)
        good = http.post("/v1/models/m:predict", json={"instances": records})
        assert good.status_code == 200
        v2 = {"inputs": [{"name": k, "datatype": "BYTES" if k == "city" else "FP64",
                          "shape": [2], "data": [r[k] for r in bad]} for k in NEW]}
        assert http.post("/v2/models/m/infer", json=v2).status_code == 422


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
    ("y ~ cr(a, df=4)", "--formula: cr() in cr(a, df=4) is not supported; use numeric columns, "
     "C(column), interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, np.sqrt, "
     "np.abs, center(), standardize(), poly() or bs()"),
    ("y ~ np.log(bs(a, df=4))", "--formula: bs() inside an expression (np.log(bs(a, df=4))) is "
     "not supported; give bs() a term of its own"),
    ("y ~ C(city, [[1], [2], [3]])", "--formula: C(city, [[1], [2], [3]]) (a coding other "
     "than patsy's Treatment, T, Sum, Diff, Helmert, Poly) is not supported; use numeric "
     "columns, C(column), interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, "
     "np.exp, np.sqrt, np.abs, center(), standardize(), poly() or bs()"),
    ("center(y) ~ a", "--formula: the response center(y): a response is a column or a "
     "function of columns is not supported; use numeric columns, C(column), interactions "
     "(a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, np.sqrt, np.abs, center(), "
     "standardize(), poly() or bs()"),
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


@pytest.mark.parametrize("streamed", [[], ["--batch-rows", "50"]])
def test_formula_with_other_column_flags_is_refused(fitted, tmp_path, streamed):
    _, _, folder = fitted
    res = train(folder / "f.csv", "--formula", "y ~ a", "--target", "y", *streamed, "--out",
                tmp_path / "m", code=1)
    assert res.stderr.strip().endswith("--formula names the response and the terms: drop "
                                       "--target, --features, --exclude and --sample-weight")
    res = train(folder / "f.csv", "--formula", "y ~ a", "--impute", "mean",
                "--missing-indicator", *streamed, "--out", tmp_path / "m", code=1)
    assert res.stderr.strip().endswith("--missing-indicator does not go with --formula: "
                                       "--impute fills a column's blanks before the formula "
                                       "reads it")


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


# ------------------------------------------------------------------ poly() and bs() in the graph

SPLINES = "y ~ poly(a, 3) + bs(c, df=5) + C(city):bs(b, knots=[2.0, 3.5], degree=2) + d"


def _inside(df: pd.DataFrame) -> dict[str, list]:
    """New rows within the training range: each column's ends, the knots 2.0 and 3.5 of b,
    and values between."""
    rows = {"city": ["Paris", "Rome", "Lyon", "Rome", "Paris"], "b": [2.0, 3.5, 2.75,
                                                                    df.b.min(), df.b.max()]}
    for name in ("a", "c", "d"):
        rows[name] = [df[name].min(), df[name].max(), *df[name].quantile([0.3, 0.5, 0.8])]
    return rows


def _design_graph(model: Path):
    """The exported graph's design matrix itself: the model's own graph builder with W = I."""
    import onnxruntime as ort

    from serve.core.columns import read_specs
    from trainer.formula import formula_of
    from trainer.onnx_tabular import tabular_graph

    m = json.loads((model / "model.json").read_text())
    p = len(m["features"])
    proto = tabular_graph(read_specs(m, model / "model.json"), np.eye(p), np.zeros(p),
                          dtype="float64", opset=19, formula=formula_of(m))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda rows: sess.run(["prediction"], {
        k: (np.array(v, dtype=object) if k == "city" else np.array(v, dtype=np.float64))
        .reshape(-1, 1) for k, v in rows.items()})[0]


def test_splines_and_polynomials_equal_patsy_and_formulaic_in_the_graph(fitted, tmp_path):
    """The graph's bs() columns equal patsy's basis, and its poly() columns formulaic's, on
    new rows to 1e-10; the coefficients equal statsmodels' (bs() by name; poly() by position:
    formulaic counts its columns from 1)."""
    import formulaic
    import patsy
    import statsmodels.formula as sm_formula

    _, _, folder = fitted
    df = pd.read_csv(folder / "f.csv")
    train(folder / "f.csv", "--formula", SPLINES, "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "--contributions", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    inside = _inside(df)
    design = _design_graph(tmp_path / "m")(inside)
    names = m["features"]
    new = pd.DataFrame(inside)
    # bs(): patsy's own basis, learned on the training rows, evaluated on the new ones
    ref = patsy.dmatrix("bs(c, df=5) + C(city):bs(b, knots=[2.0, 3.5], degree=2) - 1", df)
    want = pd.DataFrame(np.asarray(patsy.build_design_matrices([ref.design_info], new)[0]),
                        columns=ref.design_info.column_names)
    for name in want.columns:
        np.testing.assert_allclose(design[:, names.index(name)], want[name], rtol=1e-10,
                                   atol=1e-12, err_msg=name)
    formulaic_basis = formulaic.model_matrix("poly(a, 3) - 1", df).model_spec \
        .get_model_matrix(new)
    for k in range(3):
        np.testing.assert_allclose(design[:, names.index(f"poly(a, 3)[{k}]")],
                                   formulaic_basis[f"poly(a, 3)[{k + 1}]"], rtol=1e-10,
                                   atol=1e-12)
    # the coefficients: statsmodels with patsy (bs) and with formulaic (poly, bs by position)
    ours = dict(zip(names, m["model"]["coef_"][0]))
    patsy_fit = smf.ols(SPLINES.replace("poly(a, 3)", "I(a) + I(a**2) + I(a**3)"), df).fit()
    for name, value in patsy_fit.params.items():
        if name.startswith("bs(") or ":bs(" in name:
            assert ours[name] == pytest.approx(value, rel=1e-8, abs=1e-10), name
    try:
        sm_formula.options.formula_engine = "formulaic"
        f_fit = smf.ols("y ~ poly(a, 3) + bs(c, df=5) + d", df).fit()
    finally:
        sm_formula.options.formula_engine = "patsy"
    train(folder / "f.csv", "--formula", "y ~ poly(a, 3) + bs(c, df=5) + d", "--solver",
          "lstsq", "--dtype", "float64", "--out", tmp_path / "p", "-q")
    p = json.loads((tmp_path / "p" / "model.json").read_text())
    np.testing.assert_allclose(p["model"]["coef_"][0][:3], [f_fit.params[f"poly(a, 3)[{k}]"]
                                                           for k in (1, 2, 3)], rtol=1e-8)
    # and every consumer predicts what statsmodels does
    from serve import Predictor

    np.testing.assert_allclose(Predictor.load(tmp_path / "m").predict(inside)[:, 0],
                               patsy_fit.predict(new), rtol=1e-10)


def test_a_value_outside_the_splines_range_is_refused_or_nan(fitted, tmp_path):
    from serve import Predictor
    from serve.runtime.predictor import PredictionInputError

    _, _, folder = fitted
    train(folder / "f.csv", "--formula", "y ~ bs(c, df=5) + a", "--solver", "lstsq", "--dtype",
          "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "-q")
    p = Predictor.load(tmp_path / "m")
    rows = {"a": [1.0, 2.0], "c": [4.0, 9.5]}
    with pytest.raises(PredictionInputError, match=r"^row 2: the formula 'y ~ bs\(c, df=5\) \+ "
                       r"a' gives no number for these values \(a function outside its domain, "
                       r"e\.g\. np\.log of 0, or a value outside the range bs\(\) was fit on\); "
                       r"on_unknown='nan' predicts NaN for it$"):
        p.predict(rows)
    got = p.predict(rows, on_unknown="nan")
    assert np.isfinite(got[0, 0]) and np.isnan(got[1, 0])


def test_a_float32_formula_exports_its_intervals(fitted, tmp_path):
    """The intervals' variance is computed in float64 inside a float32 graph: a formula's large
    design values (I(a**2), np.exp) would cancel away float32's digits."""
    from serve import Predictor

    _, _, folder = fitted
    formula = "y ~ C(city) * a + I(a**2) + np.exp(c / 4)"
    train(folder / "f.csv", "--formula", formula, "--solver", "lstsq", "--out", tmp_path / "m",
          "-q")
    export(tmp_path / "m", "--format", "onnx", "--intervals", "0.95", "-q")
    reference = smf.ols(formula, pd.read_csv(folder / "f.csv")).fit()
    frame = reference.get_prediction(pd.DataFrame(NEW)).summary_frame(alpha=0.05)
    got = Predictor.load(tmp_path / "m").predict_intervals(NEW)
    np.testing.assert_allclose(got["prediction_lower"][:, 0], frame["obs_ci_lower"], rtol=2e-6)
    np.testing.assert_allclose(got["mean_upper"][:, 0], frame["mean_ci_upper"], rtol=2e-6)


# ------------------------------------------------------------------ blanks, as for plain columns

RSTYLE = Path(__file__).resolve().parents[1] / "fixtures" / "rstyle.csv"
BLANKS = "y ~ C(city) * x1 + bs(x2, df=4)"


def test_blanks_and_impute_work_as_for_plain_columns(tmp_path):
    """R's CSV (NA in a text column, a number column and the response): the rows with a blank
    response are dropped and counted, a blank level is a level of its own, a blank number is
    filled with --impute's value from the training rows before the formula reads it; equal to
    statsmodels on the same filled rows, and every new row's blanks are filled alike."""
    from serve import Predictor

    res = train(RSTYLE, "--formula", BLANKS, "--solver", "lstsq", "--dtype", "float64",
                "--out", tmp_path / "m", code=1)
    assert res.stderr.strip().splitlines()[-1] == (
        f"linreg-train: error: {RSTYLE}: row 8, column 'x1': missing value; pass --impute "
        "mean|median|most-frequent|constant:V to fill the column before the formula reads it")
    train(RSTYLE, "--formula", BLANKS, "--impute", "median", "--solver", "lstsq", "--dtype",
          "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "--contributions", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    df = pd.read_csv(RSTYLE)
    df = df[df.y.notna()]
    fill = df.x1.median()
    assert m["data"]["dropped_rows"] == 7 and m["warnings"] == [
        "dropped 7 row(s) with a blank target ('y'); --missing-target error refuses them "
        "instead"]
    # every numeric column gets a fill, as plain columns do (a blank may come later)
    assert [c.get("fill") for c in m["columns"]] == [None, fill, df.x2.median()]
    df = df.assign(x1=df.x1.fillna(fill), city=df.city.fillna(""))
    reference = smf.ols(BLANKS, df).fit()
    ours = dict(zip(["Intercept", *m["features"]], [m["model"]["intercept_"][0],
                                                     *m["model"]["coef_"][0]]))
    assert set(ours) == set(reference.params.index)
    for name, value in reference.params.items():
        assert ours[name] == pytest.approx(value, rel=1e-8, abs=1e-10), name
    new = {"city": [None, "Rome", "NA", "Lyon"], "x1": [None, 3.0, "NA", 12.5],
           "x2": [0.1, -1.0, 0.7, 1.2]}
    filled = pd.DataFrame({"city": ["", "Rome", "", "Lyon"], "x1": [fill, 3.0, fill, 12.5],
                           "x2": new["x2"]})
    p = Predictor.load(tmp_path / "m")
    np.testing.assert_allclose(p.predict(new)[:, 0], reference.predict(filled), rtol=1e-10)
    e = p.explain(new)
    np.testing.assert_allclose(e.baseline[0] + e.contributions[:, 0].sum(axis=1),
                               e.prediction[:, 0], rtol=1e-12)


# ------------------------------------------------------------------ a formula at every size

STREAMED = "y ~ C(city, Sum) * np.log(a) + bs(b, df=4) + standardize(a) + poly(a, 2)"


def test_a_formula_over_a_dataset_folder_equals_the_in_memory_fit(tmp_path):
    """Four Parquet files, streamed in 150-row chunks past --max-memory and over 2 processes:
    the same design (levels, knots, the transforms' state, --impute's fills; patsy is given
    every training row, chunk by chunk), so the same coefficients (1e-10), rows left out,
    means and predictions as the in-memory fit of the same rows in one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serve import Predictor

    rng = np.random.default_rng(21)
    n = 2000
    a, b = rng.uniform(1, 10, n), rng.uniform(1, 5, n)
    city = rng.choice(["Paris", "Lyon", "Nice"], n)
    y = 1.5 * np.log(a) - 2 * b + (city == "Nice") * 2 + rng.normal(size=n) * 0.3
    table = pa.table({"a": a, "b": pa.array(np.where(rng.random(n) < 0.05, np.nan, b),
                                            from_pandas=True), "city": city,
                      "y": pa.array(np.where(rng.random(n) < 0.03, np.nan, y), from_pandas=True)})
    (tmp_path / "parts").mkdir()
    for i in range(4):
        pq.write_table(table.slice(i * n // 4, n // 4), tmp_path / "parts" / f"p{i}.parquet",
                       row_group_size=200)
    pq.write_table(table, tmp_path / "all.parquet")
    common = ["--formula", STREAMED, "--impute", "mean", "--solver", "lstsq", "--dtype",
              "float64", "-q"]
    train(tmp_path / "all.parquet", *common, "--out", tmp_path / "memory")
    train(tmp_path / "parts", *common, "--batch-rows", "150", "--max-memory", "1K", "--out",
          tmp_path / "streamed")
    res = run_script("linreg-train", tmp_path / "parts", *common, "--batch-rows", "150",
                     "--nproc", "2", "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    runs = {k: json.loads((tmp_path / k / "model.json").read_text())
            for k in ("memory", "streamed", "two")}
    want = runs["memory"]
    new = {"city": ["Nice", "Paris"], "a": [2.5, 7.0], "b": [None, 4.0]}
    for how in ("memory", "streamed", "two"):
        export(tmp_path / how, "--format", "onnx", "--contributions", "-q")
    base = Predictor.load(tmp_path / "memory").explain(new)
    for how in ("streamed", "two"):
        got = runs[how]
        assert got["features"] == want["features"] and got["targets"] == ["y"], how
        np.testing.assert_allclose(got["model"]["coef_"], want["model"]["coef_"], rtol=1e-10,
                                   err_msg=how)
        np.testing.assert_allclose(got["model"]["feature_means"],
                                   want["model"]["feature_means"], rtol=1e-10, atol=1e-12)
        assert got["data"]["dropped_rows"] == want["data"]["dropped_rows"] > 0
        assert got["training"]["streamed"]["kept_in_memory"] is False or how == "two"
        for name in ("a", "b"):
            assert got["formula"]["fills"][name] == pytest.approx(
                want["formula"]["fills"][name], rel=1e-12)
        e = Predictor.load(tmp_path / how).explain(new)
        np.testing.assert_allclose(e.prediction, base.prediction, rtol=1e-10)
        np.testing.assert_allclose(e.contributions, base.contributions, rtol=1e-9, atol=1e-10)


def test_an_unseen_level_as_for_plain_columns(fitted, tmp_path):
    """--unknown reference: an unseen level predicts as the Treatment reference level, in the
    graph itself (its one-hot is all zeros) and in Python; a coding without a reference level
    refuses the flag; per call, on_unknown='reference' works on any model with one."""
    import onnxruntime as ort

    from serve import Predictor

    _, _, folder = fitted
    formula = "y ~ C(city, Treatment('Rome')) * a"
    train(folder / "f.csv", "--formula", formula, "--unknown", "reference", "--solver",
          "lstsq", "--dtype", "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "-q")
    p = Predictor.load(tmp_path / "m")
    assert (p.columns[0].reference, p.columns[0].unknown) == ("Rome", "reference")
    rows = {"city": ["Nice", "Rome"], "a": [2.0, 2.0]}
    got = p.predict(rows)
    assert got[0, 0] == got[1, 0]
    sess = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    bare = sess.run(None, {"city": np.array([["Nice"], ["Rome"]], dtype=object),
                           "a": np.array([[2.0], [2.0]])})[0]
    np.testing.assert_array_equal(bare, got)
    res = train(folder / "f.csv", "--formula", "y ~ C(city, Sum) + a", "--unknown",
                "reference", "--out", tmp_path / "s", code=1)
    assert res.stderr.strip().splitlines()[-1] == (
        "linreg-train: error: --unknown reference: column 'city' has no reference level in this "
        "formula (its coding gives no level all zeros); use Treatment coding, C(city), or "
        "--unknown error")
    train(folder / "f.csv", "--formula", formula, "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "e", "-q")
    export(tmp_path / "e", "--format", "onnx", "-q")
    strict = Predictor.load(tmp_path / "e")
    np.testing.assert_array_equal(strict.predict(rows, on_unknown="reference"), got)


def test_http_unseen_levels_under_the_models_own_policy(fitted, tmp_path):
    """--unknown reference served (dynamic batching on): an unseen level is the reference
    level, while the same request's np.log of a negative is still named."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings

    _, _, folder = fitted
    formula = "y ~ C(city) + np.log(b)"
    train(folder / "f.csv", "--formula", formula, "--unknown", "reference", "--solver",
          "lstsq", "--dtype", "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "-q")
    app = create_app(Repository.open(tmp_path / "m"), ServerSettings(max_batch_delay_us=2000))
    with TestClient(app) as http:
        got = http.post("/predict", json={"instances": [{"city": "Nice", "b": 2.0},
                                                        {"city": "Lyon", "b": 2.0}]})
        assert got.status_code == 200, got.text
        first, second = got.json()["predictions"]
        assert first == second  # Lyon: the reference level (the first, as patsy's Treatment)
        bad = http.post("/predict", json={"instances": [{"city": "Nice", "b": -2.0}]})
        assert bad.status_code == 422 and "gives no number" in bad.json()["error"]
