"""The artifact folder: model.pt, model.json, history.csv, plots; reproducible and safe to load."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from serve.core.manifest import sha256_file
from tests.conftest import run_script
from trainer.fit import TrainConfig
from trainer.synth import make_dataset, write_dataset
from trainer.train import train


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth.csv"
    write_dataset(make_dataset(500, 3, 2, seed=5), path)
    return path


def test_same_data_and_seed_give_a_bit_identical_model_pt(synth_csv, tmp_path):
    cfg = dict(epochs=200, lr=0.01, batch_size=32, seed=11, device="cpu")
    a, _ = train(synth_csv, out=tmp_path / "a", config=TrainConfig(**cfg), targets=["y0", "y1"])
    b, _ = train(synth_csv, out=tmp_path / "b", config=TrainConfig(**cfg), targets=["y0", "y1"])
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    c, _ = train(synth_csv, out=tmp_path / "c", config=TrainConfig(**{**cfg, "seed": 12}),
                 targets=["y0", "y1"])
    assert (a / "model.pt").read_bytes() != (c / "model.pt").read_bytes()


def test_model_pt_is_a_weights_only_state_dict(synth_csv, tmp_path):
    out, manifest = train(synth_csv, out=tmp_path / "m", config=TrainConfig(epochs=50),
                          targets=["y0", "y1"], val_fraction=0.2)
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == {"linear.weight", "linear.bias"}
    assert state["linear.weight"].shape == (2, 3)
    np.testing.assert_array_equal(state["linear.weight"].double().numpy(), manifest["model"]["coef_"])
    # A plain nn.Module script loads it.
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(3, 2)
    model.load_state_dict(state)


def test_manifest_records_what_a_user_needs(synth_csv, tmp_path):
    out, _ = train(synth_csv, out=tmp_path / "m", config=TrainConfig(epochs=300, lr=0.1,
                   standardize=True), targets=["y0", "y1"], val_fraction=0.25, plot=True)
    m = json.loads((out / "model.json").read_text())
    assert m["schema_version"] == 1
    assert m["features"] == ["x0", "x1", "x2"] and m["targets"] == ["y0", "y1"]
    assert m["model"] | {"coef_": None, "intercept_": None, "feature_means": None} == {
        "type": "linear", "n_features": 3, "n_targets": 2, "bias": True, "dtype": "float32",
        "coef_": None, "intercept_": None, "feature_means": None}
    assert len(m["model"]["feature_means"]) == 3  # of the 375 training rows (contributions)
    assert m["data"]["rows"] == 500 and m["data"]["train_rows"] == 375
    assert m["data"]["validation_rows"] == 125
    assert m["data"]["sha256"] == sha256_file(synth_csv)
    t = m["training"]
    want_device = "cuda" if torch.cuda.is_available() else "cpu"  # --device auto
    assert (t["seed"], t["lr"], t["epochs_run"], t["device"][:4]) == (1, 0.1, 300, want_device)
    assert t["torch_version"] == torch.__version__
    assert m["normalization"]["folded_into_weights"] is True
    assert len(m["normalization"]["mean"]) == 3
    for split in ("train", "validation"):
        assert len(m["metrics"][split]["mse"]) == 2
        assert all(0.9 < r <= 1 for r in m["metrics"][split]["r2"])
    for name in ("model.pt", "history.csv", "theta.png", "loss.png", "pred_vs_actual.png",
                 "residuals.png"):
        assert m["artifacts"][name]["sha256"] == sha256_file(out / name)
        assert (out / name).read_bytes()[:4] in (b"\x89PNG", b"PK\x03\x04", b'"epo')


def test_history_csv_has_cost_and_parameters_per_epoch(tutorial_csv, tmp_path):
    out, _ = train(tutorial_csv, out=tmp_path / "m",  # the tutorial's numbers: on the CPU
                   config=TrainConfig(epochs=2000, init="zeros", device="cpu"))
    hist = pacsv.read_csv(out / "history.csv").to_pydict()
    assert list(hist) == ["epoch", "cost", "W", "b"]
    assert len(hist["epoch"]) == 2000
    assert hist["cost"][0] == pytest.approx(18.666666, abs=1e-6)
    assert (round(hist["W"][1000], 3), round(hist["b"][1000], 3)) == (1.971, 0.066)


def test_synth_command_writes_data_and_truth(tmp_path):
    out = tmp_path / "s.parquet"
    res = run_script("linreg-synth", out, "--samples", "300", "--features", "4", "--targets", "2")
    assert res.returncode == 0, res.stderr
    truth = json.loads((tmp_path / "s.parquet.truth.json").read_text())
    assert truth["coef"][0][0] == 23.4 and len(truth["coef"]) == 2
    res = run_script("linreg-synth", out)
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-synth: error: {out}: already exists; pass --force to "
                                   "overwrite it\n")
    res = run_script("linreg-train", out, "--target", "y0", "--target", "y1", "--solver", "lstsq",
                     "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    coef = json.loads((tmp_path / "m" / "model.json").read_text())["model"]["coef_"]
    np.testing.assert_allclose(coef, truth["coef"], atol=1.5)
