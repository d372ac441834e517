"""--plot: the tutorial's three pictures for one feature, the per-target ones for more."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_script

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("features", "targets", "expected"), [
    (1, 1, {"theta.png", "loss.png", "fit.png"}),
    (12, 2, {"theta.png", "loss.png", "pred_vs_actual.png", "residuals.png"}),
])
def test_plots_by_model_shape(tmp_path, features, targets, expected):
    data = tmp_path / "d.csv"
    assert run_script("linreg-synth", data, "--samples", "400", "--features", str(features),
                      "--targets", str(targets)).returncode == 0
    target_flag = ["--target", ",".join(f"y{i}" for i in range(targets))] if targets > 1 else []
    res = run_script("linreg-train", data, *target_flag, "--plot", "--val-fraction", "0.25",
                     "--standardize", "--lr", "0.1", "--epochs", "200", "--out", tmp_path / "m",
                     "-q")
    assert res.returncode == 0, res.stderr
    pngs = {p.name for p in (tmp_path / "m").glob("*.png")}
    assert pngs == expected
    for name in pngs:
        assert (tmp_path / "m" / name).read_bytes().startswith(PNG)
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    assert pngs <= set(manifest["artifacts"])


def test_the_validation_curve_ends_at_the_validation_mse():
    from trainer.plots import PlotData, _validation_curve

    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(50, 3)), rng.normal(size=(20, 3))
    W, b = np.array([[1.0, -2.0, 0.5]]), np.array([0.3])
    Y_val = X_val @ W.T + b + rng.normal(size=(20, 1))
    history = np.array([[9.0, 0, 0, 0, 0], [1.0, *W[0], b[0]]])
    d = PlotData(history, ["cost", "W[0,0]", "W[0,1]", "W[0,2]", "b[0]"], X, X @ W.T + b,
                 X_val, Y_val, W, b, True, ["a", "b", "c"], ["y"])
    epochs, curve = _validation_curve(d)
    assert list(epochs) == [0, 1]
    assert curve[0] == pytest.approx(np.mean(Y_val ** 2))
    assert curve[1] == pytest.approx(np.mean((X_val @ W.T + b - Y_val) ** 2))
