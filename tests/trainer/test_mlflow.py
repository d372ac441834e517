"""MLflow (issue #25), against a real MLflow: the tracking library on a SQLite store in a
temporary folder, one real ``mlflow server`` on loopback, ``mlflow.pyfunc`` and ``mlflow models
serve`` on a model ``linreg-export --format mlflow`` wrote, and ``mlflow.pyfunc.spark_udf`` on
the session's Spark. Everything read back must be what linreg saved and predicts."""

from __future__ import annotations

import csv
import http.client
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from serve import Predictor
from tests.conftest import BIN, run_script
from tests.serve.test_server import free_port
from tests.trainer.commands import export, train

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.slow
TABULAR = Path(__file__).resolve().parents[1] / "fixtures" / "tabular.csv"
NEW = [{"city": "Paris", "x1": None, "x2": 0.5}, {"city": "Rome", "x1": 12.0, "x2": -1.0},
       {"city": "Lyon", "x1": 7.5, "x2": 2.0}]


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _sgd(tmp_path: Path, *extra: str) -> Path:
    train(TABULAR, "--target", "y", "--impute", "mean", "--epochs", "40", "--lr", "0.05",
          "--standardize", "--val-fraction", "0.25", "--lr-schedule", "plateau", "--out",
          tmp_path / "m", "-q", *extra)
    return tmp_path / "m"


def test_a_run_logs_its_settings_metrics_per_epoch_and_folder(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"
    folder = _sgd(tmp_path, "--mlflow", "--mlflow-uri", uri, "--mlflow-experiment", "cities")
    m = json.loads((folder / "model.json").read_text())
    client = MlflowClient(uri)
    run = client.get_run(m["mlflow"]["run_id"])
    assert m["mlflow"]["tracking_uri"] == uri and m["mlflow"]["experiment"] == "cities"
    assert client.get_experiment(run.info.experiment_id).name == "cities"
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["epochs"], p["lr"], p["standardize"], p["encoding.impute"]) == (
        "40", "0.05", "True", "mean")
    assert p["targets"] == '["y"]'
    with (folder / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    cost = client.get_metric_history(run.info.run_id, "cost")
    assert [c.step for c in cost] == list(range(len(history)))
    np.testing.assert_allclose([c.value for c in cost], [float(r["cost"]) for r in history])
    for key in ("val_cost", "lr"):  # watched each epoch (here by the plateau schedule)
        logged = client.get_metric_history(run.info.run_id, key)
        np.testing.assert_allclose([c.value for c in logged], [float(r[key]) for r in history])
    final = run.data.metrics
    assert final["train_mse"] == pytest.approx(m["metrics"]["train"]["mse"][0])
    assert final["validation_r2"] == pytest.approx(m["metrics"]["validation"]["r2"][0])
    assert final["aic"] == pytest.approx(m["statistics"][0]["aic"])
    assert run.data.tags["linreg.data.sha256"] == m["data"]["sha256"]
    assert run.data.tags["linreg.version"] == m["linreg_version"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.json", "model.pt", "history.csv", "inference.npz"} <= logged
    logged_manifest = json.loads(Path(client.download_artifacts(
        run.info.run_id, "model.json", str(tmp_path))).read_text())
    assert logged_manifest["mlflow"]["run_id"] == run.info.run_id


def test_the_default_store_is_a_sqlite_file_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(TABULAR, "--target", "y", "--impute", "mean", "--solver", "lstsq", "--out", "m",
          "-q", "--mlflow")
    assert (tmp_path / "mlruns.db").is_file()
    runs = MlflowClient("sqlite:///mlruns.db").search_runs(
        [MlflowClient("sqlite:///mlruns.db").get_experiment_by_name("linreg").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["solver"] == "lstsq"


def test_register_makes_a_model_version_mlflow_loads(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"
    train(TABULAR, "--target", "y", "--impute", "mean", "--solver", "lstsq", "--dtype",
          "float64", "--out", tmp_path / "m", "-q", "--mlflow", "--mlflow-uri", uri,
          "--mlflow-register", "cities")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert m["mlflow"]["registered"] == {"name": "cities", "version": "1"}
    versions = MlflowClient(uri).search_model_versions("name='cities'")
    assert [str(v.version) for v in versions] == ["1"]
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model("models:/cities/1")
    finally:
        mlflow.set_tracking_uri(None)
    want = Predictor.load(tmp_path / "m").predict(NEW)[:, 0]
    np.testing.assert_allclose(loaded.predict(pd.DataFrame(NEW))["y"], want, rtol=1e-12)


def test_a_server_that_is_down_is_one_warning_and_the_model_is_kept(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    res = train(TABULAR, "--target", "y", "--impute", "mean", "--solver", "lstsq", "--out",
                tmp_path / "m", "-q", "--mlflow", "--mlflow-uri", uri)
    assert time.monotonic() - start < 60
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"linreg-train: warning: the run was not logged (MLflow at {uri}: ")
    assert lines[0].endswith(f"; the model is saved in {tmp_path / 'm'}")
    m = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "mlflow" not in m and (tmp_path / "m" / "model.pt").is_file()


def test_two_processes_log_one_run_from_rank_0(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"
    res = run_script("linreg-train", TABULAR, "--target", "y", "--impute", "mean", "--solver",
                     "lstsq", "--nproc", "2", "--batch-rows", "40", "--out", tmp_path / "m",
                     "-q", "--mlflow", "--mlflow-uri", uri)
    assert res.returncode == 0, res.stderr.decode()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["streamed.world_size"] == "2"


def test_a_real_mlflow_server_on_loopback(tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(port, "/health", server, tmp_path / "server.log")
        uri = f"http://127.0.0.1:{port}"
        train(TABULAR, "--target", "y", "--impute", "mean", "--solver", "lstsq", "--out",
              tmp_path / "m", "-q", "--mlflow", "--mlflow-uri", uri)
        m = json.loads((tmp_path / "m" / "model.json").read_text())
        client = MlflowClient(uri)
        run = client.get_run(m["mlflow"]["run_id"])
        assert run.data.params["solver"] == "lstsq"
        assert "model.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


# ------------------------------------------------------------------ the MLflow Model


@pytest.fixture(scope="module")
def mlflow_model(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mlflow_model")
    train(TABULAR, "--target", "y", "--impute", "mean", "--solver", "lstsq", "--dtype",
          "float64", "--out", root / "m", "-q")
    export(root / "m", "--format", "onnx", "--intervals", "0.95", "--contributions", "-q")
    res = export(root / "m", "--format", "mlflow", "--mlflow-dir", root / "mlflow")
    assert "MLflow Model" in res.output
    return root / "m", root / "mlflow"


def _linreg_predict(model: Path, tmp_path: Path) -> pd.DataFrame:
    src = tmp_path / "new.csv"
    pd.DataFrame(NEW).to_csv(src, index=False)
    res = run_script("linreg-predict", model, src, "-o", tmp_path / "out.csv",
                     "--intervals", "--contributions", "-q")
    assert res.returncode == 0, res.stderr.decode()
    return pd.read_csv(tmp_path / "out.csv")


def test_pyfunc_predicts_what_linreg_predict_writes(mlflow_model, tmp_path):
    folder, mlflow_dir = mlflow_model
    want = _linreg_predict(folder, tmp_path)
    got = mlflow.pyfunc.load_model(str(mlflow_dir)).predict(pd.DataFrame(NEW))
    assert list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)
    meta = mlflow.models.Model.load(str(mlflow_dir))
    assert set(meta.flavors) == {"onnx", "python_function"}
    assert meta.flavors["python_function"]["loader_module"] == "serve.runtime.mlflow_model"
    inputs = {c["name"]: c for c in meta.signature.inputs.to_dict()}
    assert inputs["city"]["type"] == "string" and inputs["x2"]["type"] == "double"
    assert [c["name"] for c in meta.signature.outputs.to_dict()] == list(want.columns)
    reqs = (mlflow_dir / "requirements.txt").read_text()
    assert "onnxruntime==" in reqs and "torch" not in reqs and "mlflow" not in reqs.split(
        "\n", 1)[1]
    import onnx

    assert isinstance(mlflow.onnx.load_model(str(mlflow_dir)), onnx.ModelProto)


def test_mlflow_models_serve_answers_with_the_same_numbers(mlflow_model, tmp_path):
    folder, mlflow_dir = mlflow_model
    want = _linreg_predict(folder, tmp_path)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", str(mlflow_dir),
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ,  # it runs uvicorn by name: as if activated
                                   "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    try:
        _wait_for(port, "/ping", server, tmp_path / "serve.log")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/invocations", json.dumps({"dataframe_records": NEW}),
                     {"Content-Type": "application/json"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200, body
        got = pd.DataFrame(body["predictions"])
        np.testing.assert_allclose(got[list(want.columns)].to_numpy(), want.to_numpy(),
                                   rtol=1e-12)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def test_spark_udf_runs_the_model(mlflow_model, spark):
    folder, mlflow_dir = mlflow_model
    rows = [{"city": "Paris", "x1": 3.0, "x2": 0.5}, {"city": "Rome", "x1": 12.0, "x2": -1.0}]
    udf = mlflow.pyfunc.spark_udf(spark, str(mlflow_dir), result_type="double",
                                  env_manager="local")
    frame = spark.createDataFrame(pd.DataFrame(rows))
    got = frame.withColumn("y", udf("city", "x1", "x2")).toPandas()["y"].to_numpy()
    want = Predictor.load(folder).predict(rows)[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_an_mlflow_dir_linreg_did_not_write_is_never_replaced(mlflow_model, tmp_path):
    folder, _ = mlflow_model
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = export(folder, "--format", "mlflow", "--mlflow-dir", tmp_path / "mine", "--force",
                 code=1)
    assert res.stderr == (f"linreg-export: error: {tmp_path / 'mine'}: not an MLflow model "
                          "linreg-export wrote; --force replaces only those (choose another "
                          "--mlflow-dir)\n")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _wait_for(port: int, path: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(log.read_text()[-3000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not start: " + log.read_text()[-3000:])
