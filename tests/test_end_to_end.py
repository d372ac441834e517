"""The whole product through its console scripts: synth -> train -> export -> predict."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_script

torch = pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet"])  # CSV is covered end to end by tests/test_readme.py
def test_train_export_predict(tmp_path, fmt):
    data = tmp_path / f"d.{fmt}"
    assert run_script("linreg-synth", data, "--samples", "500", "--features", "3",
                      "--targets", "2").returncode == 0
    model = tmp_path / "model"
    res = run_script("linreg-train", data, "--target", "y0,y1", "--standardize", "--lr", "0.1",
                     "--epochs", "500", "--val-fraction", "0.2", "--out", model, "-q")
    assert res.returncode == 0, res.stderr
    res = run_script("linreg-export", model)
    assert res.returncode == 0, res.stderr
    assert res.stderr == b""  # no exporter warnings reach the user
    out = tmp_path / f"pred.{fmt}"
    res = run_script("linreg-predict", model, data, "-o", out, "--keep", "x0")
    assert res.returncode == 0, res.stderr
    table = pacsv.read_csv(data) if fmt == "csv" else pq.read_table(data)
    X = np.column_stack([table[f"x{i}"].to_numpy() for i in range(3)])
    state = torch.load(model / "model.pt", weights_only=True)
    want = X @ state["linear.weight"].double().numpy().T + state["linear.bias"].double().numpy()
    got_table = pacsv.read_csv(out) if fmt == "csv" else pq.read_table(out)
    assert got_table.column_names == ["x0", "y0", "y1"]
    np.testing.assert_array_equal(got_table["x0"].to_numpy(), X[:, 0])
    got = np.column_stack([got_table["y0"].to_numpy(), got_table["y1"].to_numpy()])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    manifest = json.loads((model / "model.json").read_text())
    assert set(manifest["exports"]) == {"onnx", "torchscript"}
