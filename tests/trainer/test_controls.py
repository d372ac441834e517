"""Training controls defined as the tools users trust define them: scikit-learn's ElasticNet
objective for penalties, statsmodels' WLS for sample weights, torch's HuberLoss and L-BFGS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
import torch  # noqa: E402

from trainer.cli import train_main  # noqa: E402
from trainer.fit import TrainConfig, TrainingError, fit, least_squares  # noqa: E402


@pytest.fixture(scope="module")
def standardised():
    """Standardised features (as scikit-learn's examples use), some true zeros."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * [1, 2, 3, 0.5, 1, 4]
    X = (X - X.mean(0)) / X.std(0)
    y = X @ [3, 0, 0, -2, 1, 0] + 1 + rng.normal(size=200)
    return X, y


@pytest.mark.parametrize("penalty, ratio", [("l1", 1.0), ("elasticnet", 0.3), ("l2", 0.0)])
def test_penalties_equal_scikit_learn(standardised, penalty, ratio):
    from sklearn.linear_model import ElasticNet, Lasso, Ridge

    X, y = standardised
    alpha = 0.2
    ref = (Lasso(alpha=alpha, tol=1e-14, max_iter=10**6) if penalty == "l1" else
           ElasticNet(alpha=alpha, l1_ratio=ratio, tol=1e-14, max_iter=10**6)).fit(X, y)
    exact = fit(X, y[:, None], TrainConfig(solver="lstsq", dtype="float64", penalty=penalty,
                                           alpha=alpha, l1_ratio=ratio))
    np.testing.assert_allclose(exact.coef_[0], ref.coef_, rtol=1e-6, atol=1e-12)
    assert exact.intercept_[0] == pytest.approx(ref.intercept_, rel=1e-6)
    if penalty == "l2":  # Ridge's objective is unscaled: its alpha is n times ours
        ridge = Ridge(alpha=alpha * len(y), tol=1e-14).fit(X, y)
        np.testing.assert_allclose(exact.coef_[0], ridge.coef_, rtol=1e-6)
    sgd = fit(X, y[:, None], TrainConfig(dtype="float64", penalty=penalty, alpha=alpha,
                                         l1_ratio=ratio, epochs=3000, lr=0.1, init="zeros"))
    np.testing.assert_allclose(sgd.coef_[0], ref.coef_, rtol=1e-3, atol=1e-3)
    zeros = ref.coef_ == 0
    if zeros.any():  # L1 zeros are exact zeros, in both solvers
        assert (exact.coef_[0][zeros] == 0).all() and (sgd.coef_[0][zeros] == 0).all()


def test_sample_weight_equals_statsmodels_wls(tmp_path):
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 3))
    w = rng.uniform(0.2, 3.0, size=120)
    y = X @ [1.0, -2.0, 0.5] + 2 + rng.normal(size=120) / np.sqrt(w)
    path = tmp_path / "w.csv"
    np.savetxt(path, np.column_stack([X, w, y]), delimiter=",", header="a,b,c,w,y",
               comments="")
    res = CliRunner().invoke(train_main, [str(path), "--sample-weight", "w", "--solver",
                                          "lstsq", "--dtype", "float64", "--out",
                                          str(tmp_path / "m"), "-q"])
    assert res.exit_code == 0, res.stderr
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert m["features"] == ["a", "b", "c"] and m["data"]["sample_weight"] == "w"
    wls = sm.WLS(y, sm.add_constant(X), weights=w).fit()
    s = m["statistics"][0]
    np.testing.assert_allclose(s["coef"], wls.params, rtol=1e-8)
    np.testing.assert_allclose(s["std_err"], wls.bse, rtol=1e-8)
    for ours, theirs in [("r2", wls.rsquared), ("f_stat", wls.fvalue), ("aic", wls.aic),
                         ("log_likelihood", wls.llf), ("sigma", np.sqrt(wls.scale))]:
        assert s[ours] == pytest.approx(theirs, rel=1e-8), ours


def test_negative_weights_are_refused(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("a,w,y\n1,1,2\n2,-1,4\n3,1,6\n")
    res = CliRunner().invoke(train_main, [str(path), "--sample-weight", "w", "--out",
                                          str(tmp_path / "m")])
    assert res.exit_code == 1
    assert res.stderr == (f"linreg-train: error: {path}: row 2, column 'w': the sample weight -1 "
                          "is negative; weights must be >= 0\n")


def test_huber_matches_a_plain_torch_loop_bit_for_bit(standardised):
    X, y = standardised
    y = y.copy()
    y[::17] += 25  # outliers
    config = TrainConfig(loss="huber", huber_delta=1.5, epochs=200, lr=0.05, seed=3,
                         device="cpu")  # bit for bit on the CPU
    got = fit(X, y[:, None], config)
    torch.manual_seed(3)
    linear = torch.nn.Linear(6, 1)
    opt = torch.optim.SGD(linear.parameters(), lr=0.05)
    loss = torch.nn.HuberLoss(delta=1.5)
    xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y[:, None], dtype=torch.float32)
    for _ in range(200):
        cost = loss(linear(xt), yt)
        opt.zero_grad()
        cost.backward()
        opt.step()
    assert torch.equal(got.state_dict["linear.weight"], linear.weight.detach())
    assert torch.equal(got.state_dict["linear.bias"], linear.bias.detach())


def test_lbfgs_reaches_least_squares(standardised):
    X, y = standardised
    got = fit(X, y[:, None], TrainConfig(optimizer="lbfgs", lr=1.0, epochs=30, dtype="float64"))
    coef, intercept = least_squares(X, y[:, None], bias=True)
    np.testing.assert_allclose(got.coef_, coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.intercept_, intercept, rtol=1e-6)
    adam = fit(X, y[:, None], TrainConfig(optimizer="adam", lr=0.05, epochs=2000))
    np.testing.assert_allclose(adam.coef_, coef, atol=1e-3)


@pytest.mark.parametrize("config, message", [
    (dict(optimizer="lbfgs", batch_size=10), "--optimizer lbfgs works on the full batch; drop "
                                             "--batch-size"),
    (dict(optimizer="lbfgs", penalty="l1"), "--optimizer lbfgs needs a smooth objective; "
                                            "--penalty l1 has an L1 part"),
    (dict(solver="lstsq", loss="huber"), "--loss huber has no closed form; use --solver sgd "
                                         "(e.g. with --optimizer lbfgs)"),
    (dict(solver="lstsq", optimizer="adam"), "--optimizer adam applies to --solver sgd; the "
                                             "exact solver needs none"),
    (dict(penalty="l1", alpha=0.0), "--alpha 0.0: must be a number in"),
    (dict(penalty="elasticnet", l1_ratio=1.5), "--l1-ratio 1.5: must be a number in"),
])
def test_settings_that_cannot_work_are_refused(standardised, config, message):
    X, y = standardised
    with pytest.raises(TrainingError) as e:
        fit(X, y[:, None], TrainConfig(**config))
    assert str(e.value).startswith(message)


def test_penalised_statistics_say_why_not(tmp_path, standardised):
    X, y = standardised
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",",
               header="a,b,c,d,e,f,y", comments="")
    res = CliRunner().invoke(train_main, [str(path), "--penalty", "l1", "--alpha", "0.2",
                                          "--solver", "lstsq", "--out", str(tmp_path / "m"),
                                          "-q"])
    assert res.exit_code == 0, res.stderr
    s = json.loads((tmp_path / "m" / "model.json").read_text())["statistics"][0]
    assert s["not_defined"]["std_err"] == ("the estimates are penalized (--penalty l1 --alpha "
                                           "0.2), not least squares")


def _run(*args) -> None:
    res = CliRunner().invoke(train_main, [*map(str, args), "-q"])
    assert res.exit_code == 0, res.stderr


@pytest.fixture
def table(tmp_path, standardised):
    X, y = standardised
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,f,y",
               comments="")
    return path


def _history(folder) -> dict:
    import pyarrow.csv as pacsv

    return pacsv.read_csv(folder / "history.csv").to_pydict()


def test_early_stopping_keeps_the_best_validation_epoch(tmp_path, table):
    _run(table, "--val-fraction", "0.3", "--early-stopping", "--patience", "15", "--lr", "0.3",
         "--epochs", "3000", "--dtype", "float64", "--out", tmp_path / "m")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    h = _history(tmp_path / "m")
    best = int(np.argmin(h["val_cost"]))
    assert m["training"]["stopped"] == "early" and m["training"]["best_epoch"] == best
    assert m["training"]["epochs_run"] == best + 16 == len(h["val_cost"])
    kept = [h[f"W[0,{j}]"][best] for j in range(6)]
    np.testing.assert_allclose(m["model"]["coef_"][0], kept, rtol=1e-12)
    assert m["model"]["intercept_"][0] == pytest.approx(h["b[0]"][best], rel=1e-12)


def test_early_stopping_needs_validation_rows(tmp_path, table):
    res = CliRunner().invoke(train_main, [str(table), "--early-stopping", "--out",
                                          str(tmp_path / "m")])
    assert res.exit_code == 1
    assert res.stderr == ("linreg-train: error: --early-stopping watches the validation cost: "
                          "add --val-fraction (e.g. 0.2)\n")


@pytest.mark.parametrize("schedule, want", [
    ("step", lambda e: 0.1 * 0.5 ** (e // 7)),
    ("cosine", lambda e: 0.1 * (1 + np.cos(np.pi * e / 40)) / 2),
])
def test_lr_schedules_follow_torch_and_are_recorded(tmp_path, table, schedule, want):
    _run(table, "--lr", "0.1", "--epochs", "40", "--lr-schedule", schedule, "--lr-step-size",
         "7", "--lr-gamma", "0.5", "--out", tmp_path / "m")
    lr = _history(tmp_path / "m")["lr"]
    np.testing.assert_allclose(lr, [want(e) for e in range(40)], rtol=1e-9, atol=1e-15)


def test_plateau_lowers_the_rate(tmp_path, table):
    _run(table, "--lr", "0.5", "--epochs", "400", "--lr-schedule", "plateau",
         "--lr-patience", "3", "--lr-gamma", "0.5", "--out", tmp_path / "m")
    lr = _history(tmp_path / "m")["lr"]
    assert lr[0] == 0.5 and lr[-1] < 0.5 and all(a >= b for a, b in zip(lr, lr[1:]))


def test_warm_start_from_a_model(tmp_path, table, standardised):
    X, y = standardised
    _run(table, "--solver", "lstsq", "--dtype", "float64", "--out", tmp_path / "exact")
    _run(table, "--init-from", tmp_path / "exact", "--epochs", "1", "--lr", "1e-9",
         "--dtype", "float64", "--out", tmp_path / "warm")
    exact = json.loads((tmp_path / "exact" / "model.json").read_text())["model"]
    warm = json.loads((tmp_path / "warm" / "model.json").read_text())["model"]
    np.testing.assert_allclose(warm["coef_"], exact["coef_"], rtol=1e-6)
    res = CliRunner().invoke(train_main, [str(table), "--init-from", str(tmp_path / "exact"),
                                          "--out", str(tmp_path / "x")])  # float32 vs float64
    assert res.exit_code == 1
    assert res.stderr == (f"linreg-train: error: --init-from {tmp_path / 'exact'}: its dtype "
                          "float64 differ from this run's float32; warm start from a model of "
                          "the same shape\n")


class _Stop(KeyboardInterrupt):
    """Ctrl-C, raised from inside the loop (the progress callback runs at check points)."""


@pytest.mark.parametrize("schedule, batch", [("constant", 0), ("step", 16), ("cosine", 0),
                                             ("plateau", 16), ("constant", 16)])
def test_a_resumed_run_ends_byte_identical(tmp_path, table, schedule, batch):
    from trainer.train import train

    config = TrainConfig(epochs=120, lr=0.05, batch_size=batch, lr_schedule=schedule,
                         lr_step_size=30, momentum=0.9, log_every=0)
    train(table, out=tmp_path / "whole", config=config, val_fraction=0.2)

    def stop_after_epoch_50(done: float) -> None:
        if done >= 51:
            raise _Stop()
    with pytest.raises(_Stop):
        train(table, out=tmp_path / "cut", config=config, val_fraction=0.2,
              checkpoint_every=25, progress=stop_after_epoch_50)
    checkpoint = tmp_path / "cut.checkpoint"
    assert not (tmp_path / "cut").exists() and (checkpoint / "checkpoint.pt").is_file()
    torch.load(checkpoint / "checkpoint.pt", weights_only=True)  # loadable safely
    res = CliRunner().invoke(train_main, ["--resume", str(checkpoint), "-q"])
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "cut" / "model.pt").read_bytes() == \
        (tmp_path / "whole" / "model.pt").read_bytes()
    assert not checkpoint.exists()  # a finished run leaves no checkpoint behind


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, table):
    import signal
    import subprocess
    import time

    from tests.conftest import BIN

    out = tmp_path / "m"
    proc = subprocess.Popen([str(BIN / "linreg-train"), str(table), "--epochs", "100000000",
                             "--checkpoint-every", "200", "--out", str(out), "-q"],
                            stderr=subprocess.PIPE)
    checkpoint = tmp_path / "m.checkpoint"
    deadline = time.monotonic() + 60
    while not (checkpoint / "checkpoint.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 130
    assert err == (f"linreg-train: error: interrupted; the last checkpoint is in {checkpoint}: "
                   f"continue with linreg-train --resume {checkpoint}\n")
    assert (checkpoint / "checkpoint.pt").is_file() and not out.exists()
    res = CliRunner().invoke(train_main, [str(table), "--checkpoint-every", "10", "--out",
                                          str(out)])
    assert res.exit_code == 1
    assert res.stderr == (f"linreg-train: error: {checkpoint}: holds the checkpoint of an "
                          f"interrupted run; resume it with linreg-train --resume "
                          f"{checkpoint}, or pass --force to start over\n")


def test_the_tutorial_defaults_are_untouched(tutorial_csv, tmp_path):
    res = CliRunner().invoke(train_main, [str(tutorial_csv), "--epochs", "2000", "--lr", "0.01",
                                          "--init", "zeros", "--log-every", "1000", "--out",
                                          str(tmp_path / "m")])
    assert res.exit_code == 0, res.stderr
    assert "Epoch    0/2000 W: 0.187, b: 0.080 Cost: 18.666666" in res.output
    assert "Epoch 1000/2000 W: 1.971, b: 0.066 Cost: 0.000633" in res.output


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
@pytest.mark.parametrize("extra", [dict(penalty="elasticnet", alpha=0.1),
                                   dict(loss="huber"), dict(optimizer="lbfgs", lr=1.0),
                                   dict(optimizer="adam", lr_schedule="cosine"),
                                   dict(early_stopping=True, batch_size=32)])
def test_controls_on_cuda_match_cpu(standardised, extra):  # runs on a GPU machine only
    X, y = standardised
    w = np.linspace(0.5, 2.0, len(y))
    valid = (X[:40], y[:40, None]) if extra.get("early_stopping") else None
    runs = [fit(X[40:], y[40:, None], TrainConfig(**{"epochs": 300, "lr": 0.05,
                                                     "dtype": "float64", "device": device,
                                                     **extra}),
                weights=w[40:], validation=valid) for device in ("cpu", "cuda")]
    assert runs[1].device.startswith("cuda")
    np.testing.assert_allclose(runs[1].coef_, runs[0].coef_, rtol=1e-6, atol=1e-9)
