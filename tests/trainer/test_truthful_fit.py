"""Fits that tell the truth: R² beside MSE, and SGD compared with the exact optimum on the same
rows, on a real data set that ships with scikit-learn (diabetes, 442 x 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_script

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    frame = sklearn_datasets.load_diabetes(as_frame=True).frame
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_lstsq_matches_scikit_learn(diabetes, tmp_path):
    from sklearn.linear_model import LinearRegression

    path, frame = diabetes
    res = run_script("linreg-train", path, "--solver", "lstsq", "--dtype", "float64",
                     "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    ref = LinearRegression().fit(frame.drop(columns="target"), frame["target"])
    np.testing.assert_allclose(m["model"]["coef_"][0], ref.coef_, rtol=1e-8)
    assert m["model"]["intercept_"][0] == pytest.approx(ref.intercept_, rel=1e-10)
    assert m["metrics"]["train"]["r2"][0] == pytest.approx(
        ref.score(frame.drop(columns="target"), frame["target"]), rel=1e-10)
    assert "exact_least_squares" not in m["metrics"]


def test_a_short_sgd_run_says_so_with_the_next_step(diabetes, tmp_path):
    path, _ = diabetes
    res = run_script("linreg-train", path, "--out", tmp_path / "m", "--log-every", "0")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "  train      MSE 5260, R² 0.113" in out
    assert res.stderr.decode() == (
        "linreg-train: warning: SGD stopped short of the best fit: train MSE 5260, R² 0.113, "
        "where exact least squares gets MSE 2860, R² 0.518; try --standardize with a larger --lr "
        "(e.g. 0.1), more --epochs, or --solver lstsq\n")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert m["metrics"]["exact_least_squares"]["sgd_short_of_it"] is True
    assert m["metrics"]["exact_least_squares"]["r2"][0] == pytest.approx(0.5177, abs=1e-4)


def test_the_suggested_fix_reaches_the_optimum_and_stays_quiet(diabetes, tmp_path):
    path, _ = diabetes
    res = run_script("linreg-train", path, "--out", tmp_path / "m", "--log-every", "0",
                     "--standardize", "--lr", "0.1", "--epochs", "3000", "--val-fraction", "0.2")
    assert res.returncode == 0, res.stderr
    assert res.stderr == b""
    out = res.stdout.decode()
    assert "  train      MSE " in out and "  validation MSE " in out and "R² 0.5" in out
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert m["metrics"]["exact_least_squares"]["sgd_short_of_it"] is False


def test_several_targets_show_r2_per_target(tmp_path):
    data = tmp_path / "d.csv"
    assert run_script("linreg-synth", data, "--samples", "300", "--features", "2",
                      "--targets", "2").returncode == 0
    res = run_script("linreg-train", data, "--target", "y0,y1", "--solver", "lstsq",
                     "--out", tmp_path / "m")
    line = next(ln for ln in res.stdout.decode().splitlines() if ln.startswith("  train"))
    assert line.startswith("  train      y0: MSE ") and "; y1: MSE " in line and "R² 0.9" in line
