"""Inference statistics at training time and prediction intervals in the exported model,
against statsmodels OLS and NIST's certified Longley results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from serve import Predictor

pytest.importorskip("torch")
sm = pytest.importorskip("statsmodels.api")
from tests.trainer.commands import export, train  # noqa: E402
from trainer.cli import summary_main  # noqa: E402


def stats(folder) -> dict:
    return json.loads((folder / "model.json").read_text())["statistics"][0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Several features, heteroskedastic noise (so HC differs from nonrobust)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 4)) * [1, 3, 0.5, 10]
    y = X @ [1.5, -0.4, 2.0, 0.05] + 4 + rng.normal(size=150) * (1 + np.abs(X[:, 0]))
    path = tmp_path_factory.mktemp("stats") / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="")
    return X, y, path


@pytest.mark.parametrize("cov", ["nonrobust", "HC0", "HC1", "HC2", "HC3"])
def test_statistics_equal_statsmodels(tmp_path, data, cov):
    X, y, path = data
    train(path, "--solver", "lstsq", "--dtype", "float64", "--cov", cov, "--out",
          tmp_path / "m", "-q")
    s = stats(tmp_path / "m")
    fit = sm.OLS(y, sm.add_constant(X)).fit(cov_type=cov)
    assert s["names"] == ["Intercept", "a", "b", "c", "d"] and s["cov_type"] == cov
    for ours, theirs in [("std_err", fit.bse), ("t", fit.tvalues), ("p_value", fit.pvalues),
                         ("conf_int", fit.conf_int()), ("coef", fit.params)]:
        np.testing.assert_allclose(s[ours], theirs, rtol=1e-6, err_msg=ours)
    for ours, theirs in [("r2", fit.rsquared), ("adj_r2", fit.rsquared_adj),
                         ("f_stat", fit.fvalue), ("f_p_value", fit.f_pvalue), ("aic", fit.aic),
                         ("bic", fit.bic), ("log_likelihood", fit.llf),
                         ("sigma", np.sqrt(fit.scale)), ("condition_number", fit.condition_number),
                         ("df_model", fit.df_model), ("df_resid", fit.df_resid),
                         ("n_obs", fit.nobs)]:
        assert s[ours] == pytest.approx(float(theirs), rel=1e-6), ours
    assert s["not_defined"] == {}


@pytest.mark.parametrize("dtype, rtol, cov", [("float64", 1e-10, "nonrobust"),
                                              ("float32", 1e-5, "nonrobust"),
                                              ("float64", 1e-10, "HC3")])
def test_onnx_intervals_equal_statsmodels_summary_frame(tmp_path, data, dtype, rtol, cov):
    X, y, path = data
    train(path, "--solver", "lstsq", "--dtype", dtype, "--cov", cov, "--out", tmp_path / "m",
          "-q")
    res = export(tmp_path / "m", "--intervals", "0.9")
    dist = "t quantile 1.65" if cov == "nonrobust" else "normal quantile 1.64"
    assert f"  intervals at 0.9 ({dist}" in res.output
    fit = sm.OLS(y, sm.add_constant(X)).fit(cov_type=cov)
    new = np.random.default_rng(1).normal(size=(50, 4)) * [1, 3, 0.5, 10]
    frame = fit.get_prediction(sm.add_constant(new)).summary_frame(alpha=0.1)
    got = Predictor.load(tmp_path / "m").predict_intervals(new.astype(dtype))
    scale = np.abs(frame["mean"]).max()
    for name, col in [("prediction", "mean"), ("prediction_lower", "obs_ci_lower"),
                      ("prediction_upper", "obs_ci_upper"), ("mean_lower", "mean_ci_lower"),
                      ("mean_upper", "mean_ci_upper")]:
        np.testing.assert_allclose(got[name][:, 0], frame[col], rtol=rtol, atol=rtol * scale,
                                   err_msg=name)


def test_longley_to_nist_certified_digits(tmp_path):
    longley = pytest.importorskip("statsmodels.datasets.longley")
    data = longley.load_pandas().data
    path = tmp_path / "longley.csv"
    data.to_csv(path, index=False)
    train(path, "--target", "TOTEMP", "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "m", "-q")
    s = stats(tmp_path / "m")
    # NIST StRD, Longley: certified estimates' standard deviations and residual SD
    certified_sd = [890420.383607373, 84.9149257747669, 0.334910077722432e-01,
                    0.488399681651699, 0.214274163161675, 0.226073200069370,
                    455.478499142212]
    certified = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01,
                 -2.02022980381683, -1.03322686717359, -0.511041056535807e-01,
                 1829.15146461355]
    assert s["names"] == ["Intercept", "GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]
    np.testing.assert_allclose(s["std_err"], certified_sd, rtol=1e-7)
    np.testing.assert_allclose(s["coef"], certified, rtol=1e-7)
    assert s["sigma"] == pytest.approx(304.854073561965, rel=1e-7)
    assert s["r2"] == pytest.approx(0.995479004577296, rel=1e-9)


def test_what_is_not_defined_is_said(tmp_path, data):
    X, y, path = data
    train(path, "--solver", "lstsq", "--no-bias", "--out", tmp_path / "nb", "-q")
    s = stats(tmp_path / "nb")
    assert s["names"] == ["a", "b", "c", "d"] and "std_err" in s
    assert set(s["not_defined"]) == {"r2", "adj_r2", "f_stat", "f_p_value"}
    assert "r2" not in s and "f_stat" not in s
    train(path, "--weight-decay", "0.1", "--epochs", "5", "--out", tmp_path / "wd", "-q")
    s = stats(tmp_path / "wd")
    assert s["not_defined"]["std_err"] == ("the estimates are penalized (--weight-decay 0.1), "
                                           "not least squares")
    assert "std_err" not in s and "aic" not in s
    res = export(tmp_path / "wd", "--intervals", "0.95", code=1)
    assert res.stderr == (f"linreg-export: error: {tmp_path / 'wd'}: no covariance of the "
                          "estimates to build intervals from (std_err: the estimates are "
                          "penalized (--weight-decay 0.1), not least squares)\n")
    small = tmp_path / "small.csv"
    small.write_text("a,b,y\n1,2,3\n2,1,4\n3,5,1\n")
    train(small, "--solver", "lstsq", "--out", tmp_path / "sm", "-q")
    s = stats(tmp_path / "sm")
    assert s["df_resid"] == 0 and s["not_defined"]["sigma"].startswith(
        "no residual degrees of freedom (3 rows for 3 parameters)")


def test_summary_at_training_and_later(tmp_path, data):
    X, y, path = data
    res = train(path, "--solver", "lstsq", "--summary", "--confidence", "0.9",
                "--out", tmp_path / "m", "-q")
    lines = res.output.splitlines()
    assert lines[0].startswith("====") and "covariance                 nonrobust" in res.output
    header = next(line for line in lines if "std err" in line)
    assert header.split() == ["coef", "std", "err", "t", "P>|t|", "[0.05", "0.95]", "VIF"]
    assert any(line.startswith("Intercept ") for line in lines)
    later = CliRunner().invoke(summary_main, [str(tmp_path / "m")])
    assert later.exit_code == 0 and later.output.rstrip("\n") == res.output.rstrip("\n")
    short = train(path, "--epochs", "3", "--summary", "--out", tmp_path / "sgd", "-q")
    assert "warning: SGD's coefficients are up to " in short.output


def test_export_without_intervals_keeps_todays_contract(tmp_path, data):
    import onnxruntime as ort

    X, y, path = data
    train(path, "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "-q")
    plain = (tmp_path / "m" / "model.onnx").read_bytes()
    export(tmp_path / "m", "--intervals", "0.95", "--force", "-q")
    export(tmp_path / "m", "--force", "-q")  # and back: the intervals are gone again
    again = (tmp_path / "m" / "model.onnx").read_bytes()
    sess = ort.InferenceSession(again)
    assert [o.name for o in sess.get_outputs()] == ["prediction"]
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert "linreg.intervals" not in sess.get_modelmeta().custom_metadata_map
    strip = [line for line in again.split(b"\n") if b"created" not in line]
    assert len(again) == len(plain) and strip == [line for line in plain.split(b"\n")
                                                  if b"created" not in line]


def test_linreg_summary_on_a_bad_folder_is_one_line(tmp_path, data):
    X, y, path = data
    train(path, "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    manifest["statistics"][0]["std_err"] = "oops"
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(summary_main, [str(tmp_path / "m")])
    assert res.exit_code == 1
    assert res.stderr == (f"linreg-summary: error: {tmp_path / 'm'}/model.json: field "
                          "'statistics' is malformed; train the model again\n")
    res = CliRunner().invoke(summary_main, [str(tmp_path / "none")])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1


def test_blank_targets_are_dropped_as_statsmodels_missing_drop(tmp_path, data):
    """An R-style file with blank targets: linreg leaves those rows out (the default
    --missing-target drop) and equals statsmodels' ``OLS(..., missing="drop")``."""
    X, y, _ = data
    y = y.copy()
    y[[3, 40, 41, 99]] = np.nan
    path = tmp_path / "blank.csv"
    rows = [",".join(repr(float(v)) for v in x) + "," + ("" if np.isnan(t) else repr(float(t)))
            for x, t in zip(X, y)]
    path.write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    res = train(path, "--solver", "lstsq", "--dtype", "float64", "--out", tmp_path / "m")
    assert "linreg-train: warning: dropped 4 row(s) with a blank target ('y'); " \
           "--missing-target error refuses them instead" in res.stderr
    s = stats(tmp_path / "m")
    fit = sm.OLS(y, sm.add_constant(X), missing="drop").fit()
    for ours, theirs in [("coef", fit.params), ("std_err", fit.bse), ("p_value", fit.pvalues)]:
        np.testing.assert_allclose(s[ours], theirs, rtol=1e-8, err_msg=ours)
    assert (s["n_obs"], s["r2"]) == (146, pytest.approx(fit.rsquared, rel=1e-10))


def _warnings(folder) -> list[str]:
    return json.loads((folder / "model.json").read_text())["warnings"]


@pytest.mark.parametrize("where", [[], ["--batch-rows", "50", "--max-memory", "1K"]],
                         ids=["in memory", "streamed"])
def test_collinear_columns_are_named(tmp_path, where):
    """An exact linear combination (c = a + 2b) is named, in memory and streamed alike, and
    the fit's statistics say the standard errors are not defined."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=200), rng.normal(size=200)
    y = a - b + rng.normal(size=200) * 0.1
    path = tmp_path / "c.csv"
    np.savetxt(path, np.column_stack([a, b, a + 2 * b, y]), delimiter=",",
               header="a,b,c,y", comments="")
    res = train(path, "--solver", "lstsq", "--dtype", "float64", *where, "--out",
                tmp_path / "m")
    message = ("the design has rank 3 for 4 columns: 'c' is a linear combination of earlier "
               "columns, so the fit cannot tell their coefficients apart; --exclude such a "
               "column (or merge the levels that always go together)")
    assert _warnings(tmp_path / "m") == [message]
    assert f"linreg-train: warning: {message}" in res.stderr
    assert "rank 3 < 4" in stats(tmp_path / "m")["not_defined"]["std_err"]


@pytest.mark.parametrize("where", [[], ["--batch-rows", "50", "--max-memory", "1K"]],
                         ids=["in memory", "streamed"])
def test_an_id_column_and_a_large_condition_number_are_said(tmp_path, where):
    """A text column with nearly a level per row (a car's name) is flagged as a likely id;
    columns on wildly different scales give statsmodels' condition-number note."""
    rng = np.random.default_rng(9)
    n = 120
    a, b = rng.normal(size=n) * 1e4, rng.normal(size=n)
    names = [f"car {i % 70}" for i in range(n)]
    path = tmp_path / "auto.csv"
    path.write_text("name,a,b,y\n" + "".join(
        f"{nm},{x!r},{z!r},{x * 1e-4 + z + rng.normal() * 0.1!r}\n"
        for nm, x, z in zip(names, a.tolist(), b.tolist())))
    train(path, "--solver", "lstsq", "--exclude", "name", *where, "--out", tmp_path / "m",
          "-q")
    cond = stats(tmp_path / "m")["condition_number"]
    fit = sm.OLS(np.loadtxt(path, delimiter=",", skiprows=1, usecols=3),
                 sm.add_constant(np.column_stack([a, b]))).fit()
    assert cond == pytest.approx(fit.condition_number, rel=1e-6) and cond > 1000
    assert _warnings(tmp_path / "m") == [
        f"the condition number is large ({cond:.3g}): strong collinearity or columns on very "
        "different scales, so small changes in the data can move the coefficients a lot "
        "(statsmodels notes the same); check the columns, or --standardize"]
    train(path, "--solver", "lstsq", "--features", "name,b", *where, "--out",
          tmp_path / "ids", "-q")
    assert _warnings(tmp_path / "ids") == [
        f"column 'name' has 70 levels for {n} training rows: an id or free text rather than "
        "a category? (--exclude name)"]


def test_sgd_short_of_the_exact_fit_says_by_how_many_standard_errors(tmp_path, data):
    """SGD stopped early: the saved coefficients are measured against the exact optimum
    (statsmodels' OLS) in standard errors; past 0.1 the training warns and the summary marks
    its table."""
    from trainer.stats import sgd_distance_message

    X, y, path = data
    res = train(path, "--epochs", "30", "--lr", "0.05", "--standardize", "--dtype", "float64",
                "--out", tmp_path / "m")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    opt = m["metrics"]["exact_least_squares"]
    fit = sm.OLS(y, sm.add_constant(X)).fit()
    np.testing.assert_allclose([*opt["intercept_"], *opt["coef_"][0]], fit.params, rtol=1e-8)
    saved = np.array([*m["model"]["intercept_"], *m["model"]["coef_"][0]])
    far = np.abs(saved - fit.params) / np.array(stats(tmp_path / "m")["std_err"])
    assert opt["std_errs_from_it"] == pytest.approx(far.max(), rel=1e-9) and far.max() > 0.1
    assert opt["farthest"] == ["Intercept", "a", "b", "c", "d"][int(np.argmax(far))]
    message = sgd_distance_message(opt["std_errs_from_it"], opt["farthest"])
    assert message in m["warnings"] and f"linreg-train: warning: {message}" in res.stderr
    assert "SGD stopped short" not in res.stderr  # R² is close: only the distance tells
    summary = CliRunner().invoke(summary_main, [str(tmp_path / "m")])
    assert f"warning: {message}" in summary.output
    # converged: within a tenth of a standard error, nothing to say
    train(path, "--epochs", "3000", "--lr", "0.1", "--standardize", "--dtype", "float64",
          "--out", tmp_path / "ok", "-q")
    ok = json.loads((tmp_path / "ok" / "model.json").read_text())
    assert ok["metrics"]["exact_least_squares"]["std_errs_from_it"] < 0.1
    assert not any("standard errors from" in w for w in ok["warnings"])
