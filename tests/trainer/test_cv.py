"""--cv K (issue #22): α chosen from a grid by K-fold cross-validation equals scikit-learn's
choice on the same folds — LassoCV, ElasticNetCV and a GridSearchCV over ElasticNet(l1_ratio=0)
for l2 — with the same coefficients after the refit and the same MSE path, to 1e-8; streamed
in small chunks and over two processes it is the same run; the record and the plot are kept;
a grid without --cv, --cv without a grid or a penalty, are one line each."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.trainer.commands import train

pytest.importorskip("sklearn")
GRID = "1e-3:1:12"
N, P = 300, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("cv")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(N, P))
    X[:, 1] += 0.9 * X[:, 0]
    y = X @ np.array([1.5, 0, 0, -2, 0, 0.5, 0, 0]) + rng.normal(size=N) * 1.5
    lines = [",".join(f"x{j}" for j in range(P)) + ",y"] + [
        ",".join(f"{v:.6f}" for v in r) + f",{t:.6f}" for r, t in zip(X, y)]
    (folder / "d.csv").write_text("\n".join(lines) + "\n")
    return folder / "d.csv", np.round(X, 6), np.round(y, 6)


def _splits(k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    from trainer.cv import fold_of

    folds = fold_of(1, k, 0, np.arange(N))  # --seed 1, one file
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]


def _sklearn(penalty: str, X, y):
    from sklearn.linear_model import ElasticNet, ElasticNetCV, LassoCV
    from sklearn.model_selection import GridSearchCV

    grid = list(np.geomspace(1e-3, 1, 12))
    tight = dict(tol=1e-12, max_iter=100_000)
    model = {"l1": LassoCV(alphas=grid, cv=_splits(), **tight),
             "elasticnet": ElasticNetCV(l1_ratio=0.5, alphas=grid, cv=_splits(), **tight),
             "l2": GridSearchCV(ElasticNet(l1_ratio=0.0, **tight), {"alpha": grid},
                                cv=_splits(), scoring="neg_mean_squared_error")}[penalty]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ElasticNet(l1_ratio=0) warns that Ridge is better
        model.fit(X, y)
    if penalty == "l2":
        return model.best_params_["alpha"], model.best_estimator_.coef_, None
    return model.alpha_, model.coef_, model.mse_path_


def _model(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


@pytest.mark.parametrize("penalty", ["l1", "elasticnet", "l2"])
def test_the_choice_equals_scikit_learn(data, tmp_path, penalty):
    path, X, y = data
    res = train(path, "--penalty", penalty, "--solver", "lstsq", "--dtype", "float64",
                "--cv", "5", "--alpha", GRID, "--out", tmp_path / "m")
    alpha, coef, mse_path = _sklearn(penalty, X, y)
    m = _model(tmp_path / "m")
    cv = m["training"]["cv"]
    assert cv["alpha"] == pytest.approx(alpha, rel=1e-12) == m["training"]["alpha"]
    np.testing.assert_allclose(m["model"]["coef_"][0], coef, rtol=1e-8, atol=1e-10)
    if mse_path is not None:
        np.testing.assert_allclose(cv["mse"], mse_path, rtol=1e-8)
    assert cv["k"] == 5 and sum(cv["fold_rows"]) == N and len(cv["path"]["coef_"]) == 12
    at = cv["alphas"].index(cv["alpha"])
    assert f"--cv 5: alpha {alpha:g} of 12 (least mean validation MSE " \
           f"{cv['mse_mean'][at]:.6g})" in res.output


def test_streamed_and_two_processes_choose_the_same(data, tmp_path):
    path, *_ = data
    common = ["--penalty", "elasticnet", "--solver", "lstsq", "--dtype", "float64", "--cv", "4",
              "--alpha", GRID, "--standardize", "-q"]
    train(path, *common, "--out", tmp_path / "mem")
    train(path, *common, "--batch-rows", "37", "--out", tmp_path / "str")
    parts = tmp_path / "parts"
    parts.mkdir()
    lines = path.read_text().splitlines()
    (parts / "a.csv").write_text("\n".join(lines[:151]) + "\n")
    (parts / "b.csv").write_text("\n".join([lines[0], *lines[151:]]) + "\n")
    res = run_script("linreg-train", parts, *common, "--nproc", "2", "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    mem, streamed, two = (_model(tmp_path / n) for n in ("mem", "str", "two"))
    assert streamed["training"]["cv"]["alpha"] == mem["training"]["cv"]["alpha"]
    np.testing.assert_allclose(streamed["training"]["cv"]["mse"], mem["training"]["cv"]["mse"],
                               rtol=1e-10)
    np.testing.assert_allclose(streamed["model"]["coef_"], mem["model"]["coef_"], rtol=1e-9)
    # two files: the folds hash (file, row), so they are other folds; one choice, one fit
    assert two["training"]["cv"]["fold_rows"] != mem["training"]["cv"]["fold_rows"]
    assert sum(two["training"]["cv"]["fold_rows"]) == N
    assert two["training"]["cv"]["alpha"] in mem["training"]["cv"]["alphas"]


def test_the_plot_and_weights(data, tmp_path):
    path, *_ = data
    weighted = tmp_path / "w.csv"
    rng = np.random.default_rng(0)
    lines = path.read_text().splitlines()
    weighted.write_text("\n".join([lines[0] + ",w"] + [f"{line},{rng.uniform(0.5, 2):.3f}"
                                                      for line in lines[1:]]) + "\n")
    common = ["--target", "y", "--sample-weight", "w", "--penalty", "l1", "--solver", "lstsq",
              "--dtype", "float64", "--cv", "3", "--alpha", "0.001,0.01,0.1,1", "-q"]
    train(weighted, *common, "--plot", "--out", tmp_path / "mem")
    train(weighted, *common, "--batch-rows", "50", "--out", tmp_path / "str")
    assert (tmp_path / "mem" / "cv.png").stat().st_size > 10_000
    mem, streamed = _model(tmp_path / "mem"), _model(tmp_path / "str")
    np.testing.assert_allclose(streamed["training"]["cv"]["mse"], mem["training"]["cv"]["mse"],
                               rtol=1e-10)
    np.testing.assert_allclose(streamed["model"]["coef_"], mem["model"]["coef_"], rtol=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--penalty", "l1", "--solver", "lstsq", "--alpha", "0.1,1"],
     "--alpha 0.1,1 is a grid; choose from it with --cv K (e.g. --cv 5), or give one --alpha"),
    (["--penalty", "l1", "--solver", "lstsq", "--cv", "5"],
     "--cv 5 chooses --alpha from a grid: give two or more, e.g. --alpha 0.01,0.1,1 or "
     "--alpha 1e-3:10:20 (a log grid)"),
    (["--cv", "5", "--alpha", "0.1,1"],
     "--cv 5 chooses the penalty's --alpha by the exact solver: add --penalty "
     "l2|l1|elasticnet and --solver lstsq"),
    (["--penalty", "l1", "--solver", "lstsq", "--cv", "5", "--alpha", "1:x"],
     "Invalid value for '--alpha': '1:x': give a number, a list a,b,c or a log grid lo:hi:n "
     "(n >= 2)"),
    (["--penalty", "l1", "--solver", "lstsq", "--cv", "5", "--alpha", "0.1,-1"],
     "Invalid value for '--alpha': '0.1,-1': every alpha must be a finite number above 0"),
])
def test_bad_settings_are_one_line(data, tmp_path, args, message):
    path, *_ = data
    res = train(path, *args, "--out", tmp_path / "m", code=2 if "Invalid" in message else 1)
    assert res.stderr.strip().splitlines()[-1] == f"linreg-train: error: {message}"
    assert not (tmp_path / "m").exists()
