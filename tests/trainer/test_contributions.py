"""linreg-export --contributions (issue #23): each term's share of a prediction, inside
model.onnx. Known answers: a term's contribution is Σ coefficient x (value − the training rows'
mean) over its design columns, with statsmodels' own design and coefficients for a formula; the
baseline is the mean prediction over the training rows; baseline + Σ = the prediction. The
runtime's consumers are tested on a committed fixture (tests/serve/test_contributions.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serve import Predictor
from tests.conftest import run_script
from tests.trainer.commands import export, train

smf = pytest.importorskip("statsmodels.formula.api")
pd = pytest.importorskip("pandas")

FORMULA = ("y ~ a * C(city, Treatment(reference='Rome')) + a:b + I(a**2) + np.log(b) "
           "+ C(size, Sum) + center(d) + standardize(c)")
NEW = pd.DataFrame({"city": ["Paris", "Rome", "Lyon"], "size": ["S", "L", "M"],
                    "a": [3.0, 7.5, 1.2], "b": [2.0, 4.1, 1.1], "c": [0.5, 8.0, 3.3],
                    "d": [-1.0, 2.5, 0.0]})


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("contrib")
    rng = np.random.default_rng(5)
    n = 300
    df = pd.DataFrame({"city": rng.choice(["Lyon", "Paris", "Rome"], n),
                       "size": rng.choice(["S", "M", "L"], n),
                       "a": rng.uniform(1, 10, n).round(6), "b": rng.uniform(1, 5, n).round(6),
                       "c": rng.uniform(0, 9, n).round(6), "d": rng.normal(size=n).round(6)})
    df["y"] = (2 + 0.5 * df.a + 3 * np.log(df.b) + 1.5 * (df.city == "Paris")
               + (df["size"] == "L") + 0.2 * df.a * df.b - 0.4 * df.d
               + rng.normal(size=n)).round(6)
    df.to_csv(folder / "f.csv", index=False)
    return folder / "f.csv"


def test_a_formulas_terms_equal_statsmodels_design_and_coefficients(table, tmp_path):
    train(table, "--formula", FORMULA, "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "m", "-q")
    res = export(tmp_path / "m", "--format", "onnx", "--contributions")
    assert "contributions of 9 term(s)" in res.output
    fit = smf.ols(FORMULA, pd.read_csv(table)).fit()
    # statsmodels' coefficients by name, on patsy's design of the training and the new rows
    import patsy

    _, X = patsy.dmatrices(FORMULA, pd.read_csv(table))
    info = X.design_info
    coef = fit.params[info.column_names].to_numpy()
    means = np.asarray(X).mean(axis=0)
    Xn = np.asarray(patsy.build_design_matrices([info], NEW)[0])
    terms = [t.name() for t in info.terms if t.name() != "Intercept"]
    want = np.column_stack([((Xn - means) * coef)[:, info.term_slices[t]].sum(axis=1)
                            for t in info.terms if t.name() != "Intercept"])
    e = Predictor.load(tmp_path / "m").explain(NEW)
    assert e.terms == terms
    np.testing.assert_allclose(e.contributions[:, 0, :], want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(e.baseline, [fit.fittedvalues.mean()], rtol=1e-10)
    np.testing.assert_allclose(e.prediction[:, 0], fit.predict(NEW), rtol=1e-10)
    np.testing.assert_allclose(e.baseline[0] + e.contributions[:, 0, :].sum(axis=1),
                               e.prediction[:, 0], rtol=1e-12)
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    np.testing.assert_allclose(manifest["model"]["feature_means"], means[1:], rtol=1e-12,
                               atol=1e-14)
    assert manifest["exports"]["onnx"]["outputs"] == ["prediction", "contributions"]
    assert manifest["exports"]["onnx"]["contributions"]["parity"]["sum_max_rel_error"] < 1e-12


def test_a_tabular_models_terms_are_its_raw_columns(table, tmp_path):
    """A categorical column's indicators and a numeric column's missing indicator belong to
    their column's term."""
    df = pd.read_csv(table)
    df.loc[::7, "a"] = np.nan
    df.to_csv(tmp_path / "blanks.csv", index=False)
    train(tmp_path / "blanks.csv", "--target", "y", "--categorical", "city,size", "--impute",
          "mean", "--missing-indicator", "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "--contributions", "--intervals", "0.9", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    p = Predictor.load(tmp_path / "m")
    assert p.contributions["terms"] == ["city", "size", "a", "b", "c", "d"]
    assert p.output_names == ["prediction", "prediction_lower", "prediction_upper",
                              "mean_lower", "mean_upper", "contributions"]
    rows = [{"city": "Paris", "size": "S", "a": None, "b": 2.0, "c": 1.0, "d": 0.5}]
    e = p.explain(rows)
    coef, names = np.array(m["model"]["coef_"][0]), m["features"]
    means = dict(zip(names, m["model"]["feature_means"]))
    fill = next(c["fill"] for c in m["columns"] if c["name"] == "a")
    value = {"city[T.Paris]": 1.0, "city[T.Rome]": 0.0, "size[T.M]": 0.0, "size[T.S]": 1.0,
             "a": fill, "a[missing]": 1.0, "b": 2.0, "c": 1.0, "d": 0.5}
    assert set(value) == set(names)
    share = {t: sum(coef[j] * (value[n] - means[n]) for j, n in enumerate(names)
                    if n.split("[")[0] == t) for t in p.contributions["terms"]}
    np.testing.assert_allclose(e.contributions[0, 0], list(share.values()), rtol=1e-10)
    train_rows = pd.read_csv(tmp_path / "blanks.csv")
    mean_pred = p.predict(train_rows.drop(columns="y").to_dict("list"))[:, 0].mean()
    np.testing.assert_allclose(e.baseline, [mean_pred], rtol=1e-10)


def test_a_plain_multi_target_model_is_target_major(tmp_path):
    rng = np.random.default_rng(8)
    X = rng.normal(2.0, 3.0, size=(200, 3))
    Y = X @ np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]) + [1.0, -4.0] + rng.normal(
        size=(200, 2))
    pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "y0": Y[:, 0],
                  "y1": Y[:, 1]}).to_csv(tmp_path / "d.csv", index=False)
    train(tmp_path / "d.csv", "--target", "y0", "--target", "y1", "--solver", "lstsq",
          "--dtype", "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "--contributions", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())["model"]
    coef, b = np.array(m["coef_"]), np.array(m["intercept_"])
    new = rng.normal(size=(5, 3))
    p = Predictor.load(tmp_path / "m")
    raw = p.outputs(new)["contributions"]
    assert raw.shape == (5, 6)
    want = (new - X.mean(axis=0))[:, None, :] * coef[None, :, :]  # (rows, targets, terms)
    np.testing.assert_allclose(raw.reshape(5, 2, 3), want, rtol=1e-10)
    np.testing.assert_allclose(p.contributions["baseline"], (X @ coef.T + b).mean(axis=0),
                               rtol=1e-12)
    assert list(p.explain(new).columns())[:6] == ["y0", "y1", "y0_baseline",
                                                  "y0_contrib_x0", "y0_contrib_x1",
                                                  "y0_contrib_x2"]


def test_streamed_and_two_processes_keep_the_same_means(table, tmp_path):
    """The means come from the scan's R factor when streamed: the same numbers, so the same
    contributions."""
    common = ["--target", "y", "--categorical", "city,size", "--solver", "lstsq", "--dtype",
              "float64", "-q"]
    train(table, *common, "--out", tmp_path / "memory")
    train(table, *common, "--batch-rows", "40", "--max-memory", "1K", "--out",
          tmp_path / "streamed")
    res = run_script("linreg-train", table, *common, "--nproc", "2", "--batch-rows", "40",
                     "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    got = {}
    for how in ("memory", "streamed", "two"):
        export(tmp_path / how, "--format", "onnx", "--contributions", "-q")
        got[how] = Predictor.load(tmp_path / how).explain(NEW.drop(columns=[]))
    for how in ("streamed", "two"):
        np.testing.assert_allclose(got[how].contributions, got["memory"].contributions,
                                   rtol=1e-9, atol=1e-10, err_msg=how)
        np.testing.assert_allclose(got[how].baseline, got["memory"].baseline, rtol=1e-10)


def test_what_cannot_carry_contributions_is_one_line(table, tmp_path):
    train(table, "--target", "y", "--categorical", "city,size", "--solver", "lstsq", "--out",
          tmp_path / "m", "-q")
    res = export(tmp_path / "m", "--format", "torchscript", "--contributions", code=1)
    assert res.stderr == ("linreg-export: error: --contributions: its outputs go into "
                          "model.onnx; add --format onnx\n")
    res = export(tmp_path / "m", "--format", "onnx", "--onnx-exporter", "torch",
                 "--contributions", code=1)
    assert "--onnx-exporter torch exports the numeric core only" in res.stderr
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    del manifest["model"]["feature_means"]  # a model trained before the means were kept
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    res = export(tmp_path / "m", "--format", "onnx", "--contributions", code=1)
    assert res.stderr == ("linreg-export: error: --contributions: this model was trained by an "
                          "older linreg, which did not keep the training rows' means; train it "
                          "again\n")
    assert not (tmp_path / "m" / "model.onnx").exists()


def test_a_later_export_without_the_flag_drops_them(table, tmp_path):
    train(table, "--target", "y", "--categorical", "city,size", "--solver", "lstsq", "--out",
          tmp_path / "m", "-q")
    export(tmp_path / "m", "--format", "onnx", "--contributions", "-q")
    assert Predictor.load(tmp_path / "m").contributions is not None
    export(tmp_path / "m", "--format", "onnx", "--force", "-q")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "contributions" not in m and Predictor.load(tmp_path / "m").contributions is None
