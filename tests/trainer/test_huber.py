"""--loss huber --huber-epsilon E --solver lstsq (issue #22): scikit-learn's HuberRegressor, the
scale estimated jointly, solved by L-BFGS-B to a tight tolerance: coefficients, intercept and
scale equal HuberRegressor's to 1e-4 (its own default tolerance stops sooner), with its L2
penalty (--penalty l2 --alpha) and sample weights; streamed and over two processes it is the
same fit; torch's --huber-delta stays the SGD loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.trainer.commands import train

sklearn = pytest.importorskip("sklearn")
N = 400


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("huber")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4))
    y = X @ [1, -2, 0.5, 0] + 3 + rng.standard_t(2, size=N)
    y[:10] += 40  # outliers
    w = rng.uniform(0.5, 2.0, size=N)
    lines = ["a,b,c,d,w,y"] + [",".join(f"{v:.6f}" for v in r) + f",{s:.4f},{t:.6f}"
                               for r, s, t in zip(X, w, y)]
    (folder / "h.csv").write_text("\n".join(lines) + "\n")
    return folder / "h.csv", np.round(X, 6), np.round(y, 6), np.round(w, 4)


def _model(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


@pytest.mark.parametrize("extra, alpha, weighted", [
    ([], 0.0, False), (["--penalty", "l2", "--alpha", "0.5"], 0.5, False),
    (["--sample-weight", "w"], 0.0, True)])
def test_equals_huber_regressor(data, tmp_path, extra, alpha, weighted):
    from sklearn.linear_model import HuberRegressor

    path, X, y, w = data
    res = train(path, "--target", "y", *([] if weighted else ["--exclude", "w"]), "--loss",
                "huber", "--huber-epsilon", "1.35", "--solver", "lstsq", "--dtype", "float64",
                *extra, "--out", tmp_path / "m")
    sk = HuberRegressor(epsilon=1.35, alpha=alpha).fit(X, y, sample_weight=w if weighted
                                                       else None)
    m = _model(tmp_path / "m")
    np.testing.assert_allclose(m["model"]["coef_"][0], sk.coef_, atol=1e-4)
    assert m["model"]["intercept_"][0] == pytest.approx(sk.intercept_, abs=1e-4)
    assert m["training"]["huber_scale"][0] == pytest.approx(sk.scale_, abs=1e-4)
    assert "Huber scale σ (estimated with the coefficients): " in res.output
    assert m["statistics"][0]["not_defined"]["std_err"].startswith("the estimates are penalized")


def test_streamed_and_two_processes_are_the_same_fit(data, tmp_path):
    path, *_ = data
    common = ["--target", "y", "--exclude", "w", "--loss", "huber", "--huber-epsilon", "1.5",
              "--solver", "lstsq", "--dtype", "float64", "-q"]
    train(path, *common, "--out", tmp_path / "mem")
    train(path, *common, "--batch-rows", "37", "--out", tmp_path / "str")
    res = run_script("linreg-train", path, *common, "--nproc", "2", "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    mem = _model(tmp_path / "mem")
    for other in (_model(tmp_path / "str"), _model(tmp_path / "two")):
        np.testing.assert_allclose(other["model"]["coef_"], mem["model"]["coef_"], rtol=1e-8)
        np.testing.assert_allclose(other["training"]["huber_scale"],
                                   mem["training"]["huber_scale"], rtol=1e-8)


@pytest.mark.parametrize("args, message", [
    (["--huber-epsilon", "1.35", "--solver", "lstsq"],
     "--huber-epsilon 1.35 is scikit-learn's HuberRegressor, solved exactly: use --loss huber "
     "--solver lstsq (--huber-delta is torch's HuberLoss, for SGD)"),
    (["--loss", "huber", "--huber-epsilon", "1.35"],
     "--huber-epsilon 1.35 is scikit-learn's HuberRegressor, solved exactly: use --loss huber "
     "--solver lstsq (--huber-delta is torch's HuberLoss, for SGD)"),
    (["--loss", "huber", "--solver", "lstsq"],
     "--loss huber has no closed form; use --solver sgd (e.g. with --optimizer lbfgs), or "
     "--solver lstsq --huber-epsilon 1.35 (scikit-learn's HuberRegressor)"),
    (["--loss", "huber", "--huber-epsilon", "1.35", "--solver", "lstsq", "--penalty", "l1"],
     "--huber-epsilon takes HuberRegressor's L2 penalty only: --penalty l2 --alpha A (its "
     "alpha), without --cv"),
])
def test_bad_settings_are_one_line(data, tmp_path, args, message):
    path, *_ = data
    res = train(path, "--target", "y", *args, "--out", tmp_path / "m", code=1)
    assert res.stderr.strip().splitlines()[-1] == f"linreg-train: error: {message}"
