"""Hardening, round 3, on the runtime side (issue #20): never a wrong or stale answer, never a
5xx, bounded resources. Each test is one example of the issue, named after the class it stands
for. Runs without torch; the server tests start a real ``linreg-serve`` on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve import Predictor
from serve.batch.files import _check_predictions, predict_folder
from serve.batch.workers import ModelPayload, predict_part
from serve.core.errors import ModelError, OutputError
from serve.core.formats import files_of
from serve.core.jsontext import JSONTextError, loads
from serve.server.metrics import Metrics
from serve.server.repository import Repository
from tests.conftest import run_script, write_csv
from tests.serve.conftest import MODELS, expected

MULTI, ONE, TAB = MODELS / "multi", MODELS / "one", MODELS / "tabular"
X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.5, 0.0, 2.5, 10.0]])


def _put(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("model.onnx", "model.json"):
        shutil.copy2(src / name, dest / name)
    return dest


# ------------------------------------------------------------------ a bad entry harms only itself

def test_a_unicode_digit_folder_is_no_version_and_polling_goes_on(tmp_path):
    root = tmp_path / "repo"
    _put(MULTI, root / "m" / "1")
    (root / "m" / "²").mkdir()  # "²".isdigit() is true, int("²") fails
    _put(ONE, root / "other" / "1")
    repo = Repository.open(root)
    assert repo.versions("m") == ["1"] and repo.versions("other") == ["1"]
    # a model replaced elsewhere in the repository is picked up: the scan does not fail
    _put(MULTI, root / "other" / "2")
    repo.poll()
    assert repo.versions("other") == ["1", "2"]
    np.testing.assert_allclose(repo.get("other").predictor.predict(X), expected(MULTI, X),
                               rtol=1e-5)
    repo.load("m")  # load (Triton's repository API) of that model: no exception
    assert repo.versions("m") == ["1"]


def test_a_triton_export_into_a_repository_holding_a_unicode_digit_folder(tmp_path):
    from serve.runtime.triton import write_repository

    root = tmp_path / "repo"
    (root / "multi" / "²").mkdir(parents=True)
    _put(MULTI, root / "multi" / "1")
    (root / "multi" / "1" / "model.json").unlink()  # a version another tool wrote
    folder, version = write_repository(MULTI, root)
    assert version == "2" and (folder / "2" / "model.onnx").is_file()
    assert (root / "multi" / "²").is_dir() and (root / "multi" / "1" / "model.onnx").is_file()
    with pytest.raises(OutputError, match="model.json is missing or is not linreg's"):
        write_repository(MULTI, root, version=1, force=True)  # not linreg's: never replaced


def test_a_model_name_that_is_not_utf8_is_skipped_and_harms_nothing(tmp_path):
    root = tmp_path / "repo"
    _put(ONE, root / "good")
    bad = os.fsencode(root) + b"/caf\xe9"
    os.makedirs(bad)
    for name in (b"model.onnx", b"model.json"):
        shutil.copy2(os.fsencode(ONE) + b"/" + name, bad + b"/" + name)
    repo = Repository.open(root)
    assert repo.names() == ["good"]
    json.dumps(repo.index()).encode("utf-8")  # everything listed is text
    res = run_script("linreg-serve", ONE, "--name", "caf\udce9", "--port", "0")
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert b"a model's name must be Unicode text" in res.stderr
    assert res.stderr.count(b"\n") == 1


# ------------------------------------------------------------------ names a model cannot use

def _with_metadata(tmp_path: Path, key: str, value: str) -> Path:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MULTI / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("names, problem", [
    (["x0", "x0", "x2", "x3"], "repeats the name 'x0'"),
    (["x0", "", "x2", "x3"], "holds '', not a name"),
    (["x0", None, "x2", "x3"], "holds None, not a name"),
    (["x0", "x\ud800", "x2", "x3"], "is not Unicode text"),
    (["x0", "x1"], "metadata names 2 features and 2 targets but the graph has 4 and 2"),
])
def test_a_model_whose_names_repeat_or_are_missing_is_refused_at_load(tmp_path, names, problem):
    path = _with_metadata(tmp_path, "feature_names", json.dumps(names))
    with pytest.raises(ModelError) as e:
        Predictor.load(path)
    assert problem.split("'")[0] in str(e.value) and str(e.value).startswith(str(path))
    res = run_script("linreg-predict", path, "-", input=b"x0,x1,x2,x3\n1,2,3,4\n")
    assert res.returncode == 1 and res.stdout == b"" and b"Traceback" not in res.stderr


# ------------------------------------------------------------------ each real file once

def test_a_glob_through_a_symlink_loop_lists_each_file_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_csv(data / f"p{i}.csv", ["x"], [[i]])
    (data / "again").symlink_to(".", target_is_directory=True)
    (data / "link.csv").symlink_to(data / "p0.csv")
    want = [data / f"p{i}.csv" for i in range(3)]
    assert files_of(f"{data}/**/*.csv") == want
    assert files_of(data) == want
    out = tmp_path / "out"
    rows = predict_folder(Predictor.load(ONE), f"{data}/**/*.csv", out)
    assert rows == 3 and sorted(p.name for p in out.iterdir()) == [
        "_linreg_predictions.json", "p0.csv", "p1.csv", "p2.csv"]


# ------------------------------------------------------------------ lone surrogates

@pytest.mark.parametrize("text, where", [
    ('{"inputs": [{"name": "city", "data": ["Lyon", "\\ud800"]}]}', "$.inputs[0].data[1]"),
    ('{"\\udc00": 1}', "a key of $"),
    ('[["\\ud83d\\ude00"], "\\udbff"]', "$[1]"),
])
def test_a_lone_surrogate_is_refused_where_it_enters(text, where):
    with pytest.raises(JSONTextError) as e:
        loads(text)
    assert str(e.value).startswith(f"{where}: a lone UTF-16 surrogate")
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"  # a proper pair is text


def test_jsonlines_with_a_surrogate_names_the_line_and_column(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"city": "Lyon", "x1": 1, "x2": 2}\n{"city": "\\ud800", "x1": 1, "x2": 2}\n')
    res = run_script("linreg-predict", TAB, src, "-o", tmp_path / "out.csv")
    assert res.returncode == 1 and not (tmp_path / "out.csv").exists()
    assert res.stderr.decode() == (f"linreg-predict: error: {src}: line 2: $.city: a lone UTF-16 "
                                   "surrogate (\\ud800-\\udfff without its pair) is not text; "
                                   "send valid Unicode\n")


# ------------------------------------------------------------------ cluster jobs: idempotent

def test_a_part_run_twice_replaces_its_own_output(tmp_path):
    src = write_csv(tmp_path / "p.csv", ["x0", "x1", "x2", "x3"], X.tolist())
    payload = ModelPayload.of(MULTI)
    target = tmp_path / "out.csv"
    assert predict_part(payload, str(src), str(target), {}) == 2
    assert predict_part(payload, str(src), str(target), {}) == 2  # a retried task


def test_threads_are_sized_on_the_worker(monkeypatch):
    payload = ModelPayload.of(MULTI, threads=None, processes=2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert payload.worker_threads() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert payload.worker_threads() == 1


def test_a_worker_leftover_never_blocks_force(tmp_path):
    out = tmp_path / "out"
    src = tmp_path / "in"
    src.mkdir()
    write_csv(src / "a.csv", ["x"], [[1]])
    predict_folder(Predictor.load(ONE), src, out)
    (out / ".a.csv.k3j2h1g0.tmp").write_bytes(b"half")  # a worker killed while writing
    _check_predictions(out)  # linreg's own leftover: --force may replace it
    predict_folder(Predictor.load(ONE), src, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["_linreg_predictions.json", "a.csv"]
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="did not write"):
        _check_predictions(out)


def test_an_engine_never_reports_rows_it_did_not_write(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_csv(src / "a.csv", ["x"], [[1]])

    def lying_engine(jobs):  # what two jobs sharing Dask task keys did
        return [5_000_000 for _ in jobs]

    with pytest.raises(OutputError, match="reported 5,000,000 rows but its predictions were "
                                          "not written"):
        predict_folder(Predictor.load(ONE), src, tmp_path / "out", engine=lying_engine)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_dask_jobs_on_one_cluster_with_relative_inputs(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(3)
    for job in ("a", "b"):
        (tmp_path / job).mkdir()
        for i in range(3):
            pq.write_table(pa.table({f"x{j}": rng.normal(size=50) for j in range(4)}),
                           tmp_path / job / f"part-{i}.parquet")
    # the workers run in another folder: a relative INPUT must be resolved on the driver
    elsewhere = tmp_path / "workers-cwd"
    elsewhere.mkdir()
    here = os.getcwd()
    os.chdir(elsewhere)
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    finally:
        os.chdir(here)
    try:
        procs = [subprocess.Popen([str(Path(os.sys.executable).parent / "linreg-predict"),
                                   str(MULTI), job, "-o", f"{job}-out", "--engine", "dask",
                                   "--scheduler", cluster.scheduler_address],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for job in ("a", "b")]
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        cluster.close()
    for job, (p, (_out, err)) in zip("ab", zip(procs, results)):
        assert p.returncode == 0, err.decode()
        marker = json.loads((tmp_path / f"{job}-out" / "_linreg_predictions.json").read_text())
        assert marker["rows"] == 150
        for item in marker["parts"]:
            got = pq.read_table(tmp_path / f"{job}-out" / item["output"])
            assert got.num_rows == 50


# ------------------------------------------------------------------ bounded metrics

def test_metrics_label_only_models_the_server_holds():
    metrics = Metrics(known=lambda name: name == "m")
    for i in range(1000):
        metrics.observe("v2_infer", 404, 0.001, model=f"nope-{i}")
    metrics.observe("v2_infer", 200, 0.001, rows=1, model="m")
    text = metrics.render()
    assert "nope" not in text and 'model="m"' in text
    assert 'linreg_requests_total{endpoint="v2_infer",model="",code="404"} 1000' in text


# ------------------------------------------------------------------ the live server

pytest.importorskip("fastapi")
from tests.serve.test_server import Server  # noqa: E402


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def repo_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    _put(MULTI, root / "m" / "1")
    (root / "m" / "²").mkdir()
    _put(TAB, root / "tab")
    os.makedirs(os.fsencode(root) + b"/caf\xe9")
    s = Server(root)
    yield s
    assert s.stop() == 0


def test_the_server_starts_beside_bad_entries_and_never_500s(repo_server):
    for path in ("/", "/v2/repository/index", "/metrics", "/v2/models/m"):
        method = "POST" if path.endswith("index") else "GET"
        status, _, body = repo_server.request(method, path)
        assert status == 200, (path, body)
    status, body = repo_server.json("POST", "/v2/repository/models/m/load")
    assert status == 200, body


@pytest.mark.parametrize("path, body", [
    ("/v2/models/tab/infer", '{"inputs": [{"name": "city", "shape": [1, 1], "datatype": "BYTES", '
                             '"data": ["\\ud800"]}, {"name": "x1", "shape": [1, 1], "datatype": '
                             '"FP64", "data": [1]}, {"name": "x2", "shape": [1, 1], "datatype": '
                             '"FP64", "data": [1]}]}'),
    ("/v1/models/tab:predict", '{"instances": [{"city": "\\udfff", "x1": 1, "x2": 2}]}'),
    ("/v2/models/m/infer", '{"\\ud800": 1}'),
])
def test_a_lone_surrogate_is_a_400_naming_where(repo_server, path, body):
    status, answer = repo_server.json("POST", path, body,
                                      {"Content-Type": "application/json"})
    assert status == 400, answer
    assert "a lone UTF-16 surrogate" in answer["error"]


@pytest.mark.slow
def test_soak_unknown_model_names_leave_metrics_and_memory_flat(repo_server):
    def hammer(n: int, offset: int) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", repo_server.port, timeout=30)
        for i in range(n):
            conn.request("POST", f"/v2/models/no-{offset + i}/infer", body=b"{}")
            conn.getresponse().read()
        conn.close()

    def run(total: int, offset: int) -> None:
        threads = [threading.Thread(target=hammer, args=(total // 8, offset + k * total))
                   for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run(2_000, 0)  # warm up: the allocator's arenas, the routes' caches
    time.sleep(0.5)
    size0 = len(repo_server.request("GET", "/metrics")[2])
    rss0 = _rss_kib(repo_server.proc.pid)
    run(20_000, 1_000_000)
    time.sleep(0.5)
    size1 = len(repo_server.request("GET", "/metrics")[2])
    rss1 = _rss_kib(repo_server.proc.pid)
    assert size1 <= 1.1 * size0, (size0, size1)
    assert rss1 <= 1.1 * rss0, (rss0, rss1)
