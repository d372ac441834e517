"""linreg-export: ONNX, TorchScript and pt2 agree with the trained model, and bad folders fail."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from serve import Predictor
from serve.core.manifest import sha256_file
from trainer.cli import export_main
from trainer.export import export
from trainer.fit import TrainConfig
from trainer.synth import make_dataset, write_dataset
from trainer.train import train

CONFIGS = {
    "1x1": dict(n_features=1, n_targets=1, config=dict(epochs=300, lr=0.01)),
    "8x2": dict(n_features=8, n_targets=2, config=dict(epochs=300, lr=0.01)),
    "nobias": dict(n_features=3, n_targets=1, config=dict(epochs=300, bias=False)),
    "standardized": dict(n_features=5, n_targets=3, config=dict(epochs=300, lr=0.1,
                                                                standardize=True)),
    "float64": dict(n_features=4, n_targets=1, config=dict(solver="lstsq", dtype="float64")),
}


def _trained(tmp_path, name, val_fraction=0.2):
    spec = CONFIGS[name]
    data = tmp_path / f"{name}.parquet"
    write_dataset(make_dataset(400, spec["n_features"], spec["n_targets"], seed=3), data)
    targets = [] if spec["n_targets"] == 1 else [f"y{i}" for i in range(spec["n_targets"])]
    folder, _ = train(data, out=tmp_path / name, config=TrainConfig(**spec["config"]),
                      targets=targets, val_fraction=val_fraction)
    return folder


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    folder = _trained(tmp_path_factory.mktemp(request.param), request.param)
    manifest = export(folder, formats=("onnx", "torchscript", "pt2"))
    return folder, manifest


def test_parity_is_recorded_and_within_tolerance(exported):
    folder, manifest = exported
    dtype = manifest["model"]["dtype"]
    for fmt in ("onnx", "torchscript", "pt2"):
        p = manifest["exports"][fmt]["parity"]
        assert p["max_rel_error"] <= p["tolerance"] == (1e-5 if dtype == "float32" else 1e-12)
        assert p["rows_checked"] == [80, 1, 100_000]  # the held-out rows, 1 row, a large batch
        assert manifest["artifacts"][manifest["exports"][fmt]["file"]]["sha256"] == \
            sha256_file(folder / manifest["exports"][fmt]["file"])


def test_plain_onnxruntime_matches_the_state_dict(exported, rng):
    folder, manifest = exported
    state = torch.load(folder / "model.pt", weights_only=True)
    W = state["linear.weight"].double().numpy()
    b = state["linear.bias"].double().numpy() if "linear.bias" in state else 0.0
    dtype = np.dtype(manifest["model"]["dtype"])
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 2, 1_000_000):
        X = rng.normal(0, 5, size=(n, W.shape[1])).astype(dtype)
        got = sess.run(["prediction"], {"features": X})[0]
        assert got.shape == (n, W.shape[0]) and got.dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, X.astype(np.float64) @ W.T + b, rtol=tol, atol=tol * 100)


def test_onnx_contract(exported):
    folder, manifest = exported
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert not list(folder.glob("*.data"))  # self-contained
    (inp,), (out,) = model.graph.input, model.graph.output
    elem = onnx.TensorProto.FLOAT if manifest["model"]["dtype"] == "float32" else \
        onnx.TensorProto.DOUBLE
    assert (inp.name, inp.type.tensor_type.elem_type) == ("features", elem)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == \
        ["batch", manifest["model"]["n_features"]]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == \
        ["batch", manifest["model"]["n_targets"]]
    assert out.name == "prediction"
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["feature_names"]) == manifest["features"]
    assert json.loads(meta["target_names"]) == manifest["targets"]
    assert meta["dtype"] == manifest["model"]["dtype"]
    e = manifest["exports"]["onnx"]
    assert (e["opset"], e["exporter"]) == (18, "linreg (onnx.helper: Gemm)")
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Identity"]


@pytest.mark.parametrize("name", ["8x2", "nobias", "float64"])
def test_torch_exporter_and_linregs_own_graph_agree(tmp_path, rng, name):
    """The graph linreg builds itself and torch.onnx.export(dynamo=True)'s: both one Gemm, the
    same contract, the same predictions (to the dtype's tolerance); the torch one is kept
    behind --onnx-exporter torch as the cross-check."""
    folder = _trained(tmp_path, name, val_fraction=0)
    own = export(folder, formats=("onnx",))["exports"]["onnx"]
    mine = onnx.load(folder / "model.onnx")
    theirs_manifest = export(folder, formats=("onnx",), force=True, onnx_exporter="torch")
    theirs = onnx.load(folder / "model.onnx")
    assert theirs_manifest["exports"]["onnx"]["exporter"] == "torch.onnx.export(dynamo=True)"
    assert own["exporter"] == "linreg (onnx.helper: Gemm)"
    assert "Gemm" in [n.op_type for n in theirs.graph.node]
    for a, b in zip([*mine.graph.input, *mine.graph.output],
                    [*theirs.graph.input, *theirs.graph.output]):
        assert (a.name, a.type.tensor_type.elem_type) == (b.name, b.type.tensor_type.elem_type)
    assert {p.key: p.value for p in mine.metadata_props} == \
        {p.key: p.value for p in theirs.metadata_props}
    dtype = np.float64 if name == "float64" else np.float32
    X = rng.normal(0, 5, size=(257, mine.graph.input[0].type.tensor_type.shape.dim[1].dim_value))
    X = X.astype(dtype)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(["prediction"], {"features": X})[0] for m in (mine, theirs)]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(runs[0], runs[1], rtol=tol, atol=tol)


def test_the_torch_exporter_is_refused_for_what_only_linreg_builds(tmp_path):
    folder = _trained(tmp_path, "1x1", val_fraction=0)
    with pytest.raises(Exception, match="--onnx-exporter torch exports the numeric core only"):
        export(folder, formats=("onnx",), intervals=0.95, onnx_exporter="torch")
    with pytest.raises(Exception, match="--onnx-exporter 'tf': use one of linreg, torch"):
        export(folder, formats=("onnx",), onnx_exporter="tf")


@pytest.mark.slow
def test_torchscript_and_pt2_run_with_no_project_code(tmp_path):
    """One subprocess for every model shape (one per shape cost ~3.5 s each)."""
    models = []
    for name in CONFIGS:
        folder = _trained(tmp_path, name, val_fraction=0)
        manifest = export(folder, formats=("torchscript", "pt2"))
        models.append((str(folder), manifest["model"]["n_features"], manifest["model"]["dtype"]))
    code = f"""
import sys, warnings
sys.modules['trainer'] = None; sys.modules['serve'] = None   # importing them now fails
import torch
warnings.simplefilter('ignore')
for folder, n, dtype in {models!r}:
    m = torch.jit.load(folder + '/model.torchscript.pt')
    p = torch.export.load(folder + '/model.pt2').module()
    x = torch.ones(5, n, dtype=getattr(torch, dtype))
    print(m(x).shape[0], p(x).shape[0], float((m(x) - p(x)).abs().max()))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["5 5 0.0"] * len(CONFIGS)


def test_the_runtime_feeds_the_model_its_own_dtype(exported, rng):
    folder, manifest = exported
    p = Predictor.load(folder)
    assert p.dtype == np.dtype(manifest["model"]["dtype"])
    X = rng.normal(size=(3, p.n_features))
    with torch.no_grad():
        state = torch.load(folder / "model.pt", weights_only=True)
        lin = torch.nn.Linear(p.n_features, p.n_targets, bias="linear.bias" in state,
                              dtype=state["linear.weight"].dtype)
        lin.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
        ref = lin(torch.tensor(X, dtype=lin.weight.dtype)).numpy()
    np.testing.assert_allclose(p.predict(X), ref, rtol=1e-5 if p.dtype == np.float32 else 1e-12)


def test_export_cli_and_refusal_to_overwrite(tmp_path):
    folder = _trained(tmp_path, "1x1", val_fraction=0)
    res = CliRunner().invoke(export_main, [str(folder)])
    assert res.exit_code == 0, res.stderr
    assert "model.onnx: onnx agrees with the trained model: relative error" in res.output
    assert (folder / "model.onnx").exists() and (folder / "model.torchscript.pt").exists()
    assert not (folder / "model.pt2").exists()
    assert json.loads((folder / "model.json").read_text())["exports"]["onnx"]["parity"][
        "rows_checked"] == [256, 1, 100_000]  # synthetic rows: no held-out data
    res = CliRunner().invoke(export_main, [str(folder)])
    assert res.exit_code == 1
    assert res.stderr == f"linreg-export: error: {folder}/model.onnx: already exists; pass " \
                         "--force to overwrite it\n"
    assert CliRunner().invoke(export_main, [str(folder), "--force", "-q"]).exit_code == 0


def _edit_manifest(folder, edit):
    m = json.loads((folder / "model.json").read_text())
    edit(m)
    (folder / "model.json").write_text(json.dumps(m))


def _unrecord(m):  # as a manifest written before artifacts were hashed
    m["artifacts"].pop("model.pt")


def _break(folder, how):
    if how == "missing":
        (folder / "model.pt").unlink()
    elif how == "tampered":
        (folder / "model.pt").write_bytes(b"garbage")
    elif how == "corrupt":
        (folder / "model.pt").write_bytes(b"garbage")
        _edit_manifest(folder, _unrecord)
    elif how == "empty":
        (folder / "model.pt").write_bytes(b"")
        _edit_manifest(folder, _unrecord)
    elif how == "nan-weights":
        torch.save({"linear.weight": torch.full((1, 1), float("nan")),
                    "linear.bias": torch.zeros(1)}, folder / "model.pt")
        _edit_manifest(folder, _unrecord)
    elif how == "mismatch":
        def seven(m):
            m["model"]["n_features"] = 7
            m["features"] = [f"f{i}" for i in range(7)]
            m["normalization"] = None
        _edit_manifest(folder, seven)
    elif how == "lying-manifest":
        _edit_manifest(folder, lambda m: m.update(features="x"))
    elif how == "bad-indices":
        _edit_manifest(folder, lambda m: m["data"].update(validation_indices=[10**9]))
    elif how == "deep-manifest":
        (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    elif how == "foreign":
        torch.save({"weight": torch.zeros(1, 1)}, folder / "model.pt")
        _edit_manifest(folder, _unrecord)
    elif how == "no-manifest":
        (folder / "model.json").unlink()
    elif how == "unwritable":
        (folder / "model.onnx").mkdir()  # the rename onto it fails
        (folder / "model.onnx" / "x").write_text("x")


@pytest.mark.parametrize(("how", "message"), [
    ("missing", "{f}/model.pt: no such file; train the model first (linreg-train)"),
    ("tampered", "{f}/model.pt: its sha256 differs from the one in model.json; the file was "
                 "changed or damaged after linreg wrote it (export or train again)"),
    ("corrupt", "{f}/model.pt: not a readable state_dict ("),
    ("empty", "{f}/model.pt: not a readable state_dict ("),
    ("nan-weights", "{f}/model.pt: holds NaN or infinite weights; this model cannot predict"),
    ("lying-manifest", "{f}/model.json: field 'features' must be a non-empty list of names"),
    ("bad-indices", "{f}/model.json: field 'data.validation_indices' must be row numbers below "
                    "data.rows"),
    ("deep-manifest", "{f}/model.json: JSON nested too deeply"),
    ("mismatch", "{f}/model.pt: does not match model.json (weight (1, 1) torch.float32, bias "
                 "True; manifest says 1 target(s) x 7 feature(s), float32, bias True)"),
    ("foreign", "{f}/model.pt: not a linreg state_dict (expected the tensors 'linear.weight' "
                "and optionally 'linear.bias')"),
    ("no-manifest", "{f}/model.json: no manifest; is {f} a model folder made by linreg-train?"),
    ("unwritable", "{f}: cannot write the export ("),
])
def test_bad_model_folders_fail_cleanly(tmp_path, how, message):
    folder = _trained(tmp_path, "1x1", val_fraction=0)
    _break(folder, how)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    res = CliRunner().invoke(export_main, [str(folder), "--force"])
    assert res.exit_code == 1
    assert res.stderr.startswith(f"linreg-export: error: {message.format(f=folder)}")
    assert res.stderr.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing written
