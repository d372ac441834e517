"""The tutorials, number for number, through the console script and against plain torch loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_script, write_csv
from trainer.fit import TrainConfig, fit

TUTORIAL_LINES = [
    "Epoch    0/2000 W: 0.187, b: 0.080 Cost: 18.666666",
    "Epoch 1000/2000 W: 1.971, b: 0.066 Cost: 0.000633",
    "Epoch 1900/2000 W: 1.997, b: 0.008 Cost: 0.000008",
]


def test_tutorial_run_prints_the_tutorial_lines(tutorial_csv, tmp_path):
    res = run_script("linreg-train", tutorial_csv, "--epochs", "2000", "--lr", "0.01",
                     "--init", "zeros", "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode().splitlines()
    for line in TUTORIAL_LINES:
        assert line in out
    epoch_lines = [ln for ln in out if ln.startswith("Epoch")]
    assert len(epoch_lines) == 21  # epochs 0, 100, ..., 1900, and 2000: the saved model
    assert epoch_lines[-1] == "Epoch 2000/2000 W: 1.997, b: 0.006 Cost: 0.000005"
    assert res.stderr == b""


def test_the_last_line_is_the_saved_model_as_the_tutorial_prints_it(tutorial_csv, tmp_path):
    res = run_script("linreg-train", tutorial_csv, "--epochs", "3000", "--lr", "0.01",
                     "--init", "zeros", "--log-every", "200", "--out", tmp_path / "m", "--force")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("Epoch")]
    assert lines[-1] == "Epoch 3000/3000 W: 2.000, b: 0.001 Cost: 0.000000"
    assert lines[-2].startswith("Epoch 2800/3000 ")


def test_the_bias_free_tutorial_logs_before_the_step(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 1], [2, 2], [3, 3]])
    res = run_script("linreg-train", data, "--epochs", "10", "--no-bias", "--init", "zeros",
                     "--lr", "0.15", "--log-every", "1", "--log-before-step",
                     "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("Epoch")]
    assert lines[:3] == ["Epoch    0/10 W: 0.000, Cost: 4.666667",
                         "Epoch    1/10 W: 1.400, Cost: 0.746667",
                         "Epoch    2/10 W: 0.840, Cost: 0.119467"]
    assert len(lines) == 11 and lines[-1].startswith("Epoch   10/10 W: ")


def test_init_takes_a_number(tmp_path):
    res = fit(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [4.0], [6.0]]),
              TrainConfig(epochs=1, lr=0.0001, init=0.01, device="cpu"))
    # After one tiny step from W = b = 0.01, both are still close to 0.01.
    assert res.coef_[0, 0] == pytest.approx(0.01, abs=0.01)
    assert res.intercept_[0] == pytest.approx(0.01, abs=0.01)
    hist0 = fit(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [4.0], [6.0]]),
                TrainConfig(epochs=1, lr=1e-9, init=0.01, device="cpu")).history[0]
    assert hist0[0] == pytest.approx(np.mean((0.01 * np.array([1, 2, 3]) + 0.01 -
                                             np.array([2, 4, 6])) ** 2), rel=1e-6)


def _plain_torch_loop(x, y, *, epochs, lr, bias=True, seed=None, zeros=True, momentum=0.0):
    """The tutorial's nn.Module loop, written out as a user would, returning the history."""
    if seed is not None:
        torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], y.shape[1], bias=bias)
    if zeros:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    rows = []
    for _ in range(epochs):
        cost = F.mse_loss(model(x), y)
        opt.zero_grad()
        cost.backward()
        opt.step()
        params = [model.weight.detach().reshape(-1)]
        if bias:
            params.append(model.bias.detach().reshape(-1))
        rows.append(torch.cat([cost.detach().view(1), *params]).numpy().copy())
    return np.array(rows)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init", ["zeros", "default"])
def test_history_is_bit_identical_to_the_plain_torch_loop(bias, init):
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = 2 * x if bias else x  # the tutorials' y = 2x and the bias-free y = x
    expected = _plain_torch_loop(x, y, epochs=300, lr=0.01, bias=bias, seed=1,
                                 zeros=init == "zeros", momentum=0.9)
    res = fit(x.numpy().astype(np.float64), y.numpy().astype(np.float64),
              TrainConfig(epochs=300, lr=0.01, bias=bias, init=init, seed=1, momentum=0.9,
                          device="cpu"))
    np.testing.assert_array_equal(res.history.astype(np.float32), expected)


def test_bias_free_log_line_has_no_b(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 1], [2, 2], [3, 3]])
    res = run_script("linreg-train", data, "--epochs", "10", "--no-bias", "--init", "zeros",
                     "--log-every", "5", "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("Epoch")]
    assert lines[0] == "Epoch    0/10 W: 0.093, Cost: 4.666667"
    assert ", b:" not in lines[1]


def test_minibatch_order_follows_the_seed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    Y = X @ np.array([[1.0, -2.0]]).T + 0.5
    a = fit(X, Y, TrainConfig(epochs=20, batch_size=8, seed=3, device="cpu"))
    b = fit(X, Y, TrainConfig(epochs=20, batch_size=8, seed=3, device="cpu"))
    c = fit(X, Y, TrainConfig(epochs=20, batch_size=8, seed=4, device="cpu"))
    np.testing.assert_array_equal(a.history, b.history)
    assert not np.array_equal(a.history[:, 1:], c.history[:, 1:])
    # The epoch's cost is the row-weighted mean of its batches' costs.
    torch.manual_seed(3)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    order = torch.randperm(50)
    total = 0.0
    for s in range(0, 50, 8):
        idx = order[s:s + 8]
        cost = F.mse_loss(model(xt[idx]), yt[idx])
        opt.zero_grad()
        cost.backward()
        opt.step()
        total += cost.item() * len(idx)
    assert a.history[0, 0] == pytest.approx(total / 50, rel=1e-6)
    np.testing.assert_allclose(a.history[0, 1:3], model.weight.detach().numpy()[0], rtol=1e-6)
