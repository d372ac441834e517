"""SGD against closed-form least squares, on synthetic data with known coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.fit import DivergenceError, TrainConfig, TrainingError, fit, resolve_device
from trainer.synth import make_dataset


@pytest.fixture(scope="module")
def synth():
    return make_dataset(2000, 8, 2, seed=7)


def _lstsq(X, Y):
    A = np.hstack([X, np.ones((len(X), 1))])
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    return sol[:-1].T, sol[-1]


@pytest.mark.parametrize("config", [
    TrainConfig(epochs=1500, lr=0.01, device="cpu"),
    TrainConfig(epochs=1500, lr=0.1, standardize=True, device="cpu"),
], ids=["raw", "standardized"])
def test_sgd_lands_on_least_squares(synth, config):
    coef, intercept = _lstsq(synth.X, synth.Y)
    res = fit(synth.X, synth.Y, config)
    # Stated tolerance: 1e-3 absolute on coefficients of size ~30 (float32 SGD), 1e-2 on b.
    np.testing.assert_allclose(res.coef_, coef, atol=1e-3)
    np.testing.assert_allclose(res.intercept_, intercept, atol=1e-2)
    # ... and near the generator's true coefficients (noise sd 10 over 2000 rows).
    np.testing.assert_allclose(res.coef_, synth.coef, atol=0.5)


def test_lstsq_solver_matches_numpy_to_float_precision(synth):
    coef, intercept = _lstsq(synth.X, synth.Y)
    for dtype, rtol in [("float32", 1e-6), ("float64", 1e-12)]:
        res = fit(synth.X, synth.Y, TrainConfig(solver="lstsq", dtype=dtype))
        np.testing.assert_allclose(res.coef_, coef, rtol=rtol)
        np.testing.assert_allclose(res.intercept_, intercept, rtol=rtol)
        assert res.stopped == "exact"


def test_no_bias_lstsq_goes_through_the_origin(synth):
    res = fit(synth.X, synth.Y, TrainConfig(solver="lstsq", bias=False))
    expected = np.linalg.lstsq(synth.X, synth.Y, rcond=None)[0].T
    np.testing.assert_allclose(res.coef_, expected, rtol=1e-6)
    assert "linear.bias" not in res.state_dict
    np.testing.assert_array_equal(res.intercept_, 0.0)


def test_standardize_without_bias_only_scales(synth):
    res = fit(synth.X, synth.Y, TrainConfig(epochs=1500, lr=0.1, bias=False, standardize=True,
                                            device="cpu"))
    expected = np.linalg.lstsq(synth.X, synth.Y, rcond=None)[0].T
    np.testing.assert_allclose(res.coef_, expected, atol=1e-3)
    np.testing.assert_array_equal(res.mean_, 0.0)


def test_float64_training_keeps_more_digits(synth):
    coef, _ = _lstsq(synth.X, synth.Y)
    res = fit(synth.X, synth.Y, TrainConfig(epochs=3000, lr=0.1, standardize=True,
                                            dtype="float64", device="cpu"))
    assert res.state_dict["linear.weight"].dtype.is_floating_point
    assert str(res.state_dict["linear.weight"].dtype) == "torch.float64"
    np.testing.assert_allclose(res.coef_, coef, atol=1e-9)


def test_tol_stops_early(synth):
    res = fit(synth.X, synth.Y, TrainConfig(epochs=5000, lr=0.1, standardize=True, tol=1e-6,
                                            device="cpu"))
    assert res.stopped == "tol"
    assert res.epochs_run < 5000
    assert res.history.shape[0] == res.epochs_run
    assert res.history[-2, 0] - res.history[-1, 0] < 1e-6


def test_divergence_names_the_epoch():
    X = np.array([[1.0], [2.0], [3.0]])
    with pytest.raises(DivergenceError, match=r"training diverged at epoch \d+: the cost became "
                       r"(inf|nan) with --lr 10; try a smaller --lr \(e.g. 1\) or --standardize"):
        fit(X, 2 * X, TrainConfig(epochs=2000, lr=10, device="cpu"))


def test_cuda_without_cuda_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainingError, match=r"--device cuda: .*; use --device cpu or --device auto"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_cuda_matches_cpu(synth):  # runs on a GPU machine only
    cfg = dict(epochs=500, lr=0.1, standardize=True)
    cpu = fit(synth.X, synth.Y, TrainConfig(device="cpu", **cfg))
    gpu = fit(synth.X, synth.Y, TrainConfig(device="cuda", **cfg))
    assert gpu.device.startswith("cuda")
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-4)
    np.testing.assert_allclose(gpu.history[:, 0], cpu.history[:, 0], rtol=1e-4)


def test_a_batch_as_large_as_the_data_is_the_full_batch():
    """--batch-size at or past the row count is one step of every row an epoch: the same
    model as --batch-size 0 (the mini-batch path never sees a batch of 0)."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 2))
    Y = X @ [[1.0], [-2.0]] + 0.5
    full = fit(X, Y, TrainConfig(epochs=30, lr=0.1, batch_size=0))
    for size in (40, 1000):
        got = fit(X, Y, TrainConfig(epochs=30, lr=0.1, batch_size=size))
        np.testing.assert_array_equal(got.coef_, full.coef_)
        np.testing.assert_array_equal(got.history, full.history)
