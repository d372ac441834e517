"""linreg-serve against hostile and careless clients and models, over real HTTP on loopback:
never a 500 for a client's mistake, bounded headers and time, one model loaded once, foreign
graphs refused, and 64 clients mixing bad requests with good ones."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN
from tests.serve.bad_requests import CLIENT_MISTAKES, DEEP, HUGE_INT, wire_sample
from tests.serve.conftest import MODELS, expected
from tests.serve.test_server import MULTI, ONE, Server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

@pytest.fixture(scope="module")
def server():
    s = Server(MULTI, "--max-rows", "1000", "--request-timeout", "2")
    yield s
    assert s.stop() == 0


WIRE_MISTAKES = wire_sample(CLIENT_MISTAKES, 5)


@pytest.mark.parametrize(("path", "body", "status", "message"), WIRE_MISTAKES,
                         ids=[f"{i}-{p}" for i, (p, *_) in enumerate(WIRE_MISTAKES)])
def test_client_mistakes_get_a_4xx_never_a_500(server, path, body, status, message):
    got, _, data = server.request("POST", path, body, {"Content-Type": "application/json"})
    assert got == status, data
    assert message in json.loads(data)["error"]
    assert server.request("GET", "/health")[0] == 200


def test_csv_bodies_follow_the_file_rules_on_the_wire(server):
    got, _, data = server.request("POST", "/invocations", "x0,x0,x2,x3\n1,2,3,4\n",
                                  {"Content-Type": "text/csv"})
    assert got == 400 and json.loads(data)["error"].startswith("CSV body")


def test_client_mistakes_are_logged_as_one_line_each(tmp_path):
    s = Server(MULTI)
    try:
        for body in (DEEP, '{"instances": [[1e400, 1, 2, 3]]}', "{"):
            assert s.request("POST", "/predict", body)[0] == 400
    finally:
        assert s.stop() == 0
    lines = s.stderr().splitlines()
    bad = [ln for ln in lines if ln.startswith("linreg-serve: 400 predict: ")]
    assert len(bad) == 3, lines
    assert "Traceback" not in s.stderr()


# ------------------------------------------------------------------ headers and slow clients

def _raw(port: int, data: bytes, *, wait: float = 0, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before all of it was sent
        time.sleep(wait)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_huge_headers_get_431(server):
    request = (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n")
    reply = _raw(server.port, request)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"request line and headers larger than 65,536 bytes" in reply
    assert server.request("GET", "/health")[0] == 200


def test_a_client_that_never_finishes_its_headers_is_cut_off(server):
    start = time.monotonic()
    reply = _raw(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le", timeout=20)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 s" in reply
    assert time.monotonic() - start < 10


def test_a_client_that_never_finishes_its_body_gets_408(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"instances\""
    reply = _raw(server.port, head, timeout=20)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"(--request-timeout)" in reply


def test_an_idle_connection_is_closed(server):
    assert _raw(server.port, b"", timeout=20) == b""


# ------------------------------------------------------------------ one model, loaded once

def test_the_model_is_read_once_and_files_on_disk_never_change_it(tmp_path):
    folder = tmp_path / "multi"
    shutil.copytree(MULTI, folder)
    rows = np.random.default_rng(0).normal(size=(3000, 4)).round(3)  # the large-batch session
    s = Server(folder)
    try:
        shutil.rmtree(folder)
        status, out = s.json("POST", "/predict", {"instances": rows.tolist()})
        assert status == 200
        want = expected(MULTI, rows)
        np.testing.assert_allclose(out["predictions"], want, rtol=1e-5, atol=1e-4)
        shutil.copytree(MODELS / "one", folder)  # another model where the first one was
        status, again = s.json("POST", "/predict", {"instances": rows.tolist()})
        assert status == 200 and again == out
        assert s.json("POST", "/predict", {"instances": rows[:1].tolist()})[1][
            "predictions"] == out["predictions"][:1]
    finally:
        assert s.stop() == 0


def test_a_tampered_model_file_is_refused(tmp_path):
    folder = tmp_path / "multi"
    shutil.copytree(MULTI, folder)
    onnx_bytes = bytearray((folder / "model.onnx").read_bytes())
    onnx_bytes[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(onnx_bytes))
    res = subprocess.run([str(BIN / "linreg-serve"), str(folder)], capture_output=True,
                         timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-serve: error: {folder}/model.onnx: its sha256 "
                                   "differs from the one in model.json; the file was changed or "
                                   "damaged after linreg wrote it (export or train again)\n")


# ------------------------------------------------------------------ hostile models

@pytest.fixture
def hostile():
    """Builders of hostile graphs; they need the onnx package (not in the runtime install)."""
    pytest.importorskip("onnx", reason="building hostile graphs needs the onnx package")
    from tests.fixtures import hostile

    return hostile


@pytest.mark.parametrize("script", ["linreg-serve", "linreg-predict"])
def test_a_foreign_graph_is_refused_in_one_line(hostile, tmp_path, script):
    model = hostile.loop_model(tmp_path / "spin.onnx")
    args = [str(BIN / script), str(model)] + (["-"] if script == "linreg-predict" else [])
    res = subprocess.run(args, capture_output=True, timeout=60, input=b"f0,f1,f2,f3\n1,2,3,4\n")
    assert res.returncode == 1
    assert res.stderr.decode() == (f"{script}: error: {model}: not a linreg model graph (it uses "
                                   "Loop); if you trust this file, pass --allow-foreign-graph\n")


@pytest.mark.parametrize(("dims", "message"), [
    (["batch", "width"], "output 'prediction' is declared as [batch, width]"),
    (["batch", 2, 1], "output 'prediction' is declared as [batch, 2, 1]"),
])
def test_graphs_with_undeclared_output_widths_are_refused(hostile, tmp_path, dims, message):
    from serve import ModelError, Predictor
    path = hostile.plain_model(tmp_path / "m.onnx", out_dims=dims)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Predictor.load(path)


def test_a_graph_that_lies_about_its_output_width_is_refused(hostile, tmp_path):
    from serve import ModelError, Predictor
    path = hostile.plain_model(tmp_path / "m.onnx", out_dims=["batch", 3])  # computes 2 columns
    with pytest.raises(ModelError, match="the graph's declared shapes do not match what it "
                                         "computes"):
        Predictor.load(path)


def test_only_linregs_own_graphs_may_run_on_the_event_loop(hostile, tmp_path):
    """The server predicts a few rows inline only for a bounded graph (linreg's operators, no
    loops); a foreign one, allowed by the user, always runs off the loop, within the timeout."""
    from serve import Predictor
    from tests.serve.conftest import MODELS

    assert Predictor.load(MODELS / "multi").bounded
    assert Predictor.load(MODELS / "intervals").bounded
    spin = Predictor.load(hostile.loop_model(tmp_path / "spin.onnx"), allow_foreign_graph=True)
    assert not spin.bounded


def test_a_foreign_graph_served_on_request_never_blocks_the_server(hostile, tmp_path):
    model = hostile.loop_model(tmp_path / "spin.onnx")
    s = Server(model, "--allow-foreign-graph", "--request-timeout", "1")
    try:
        with ThreadPoolExecutor(4) as pool:
            spins = [pool.submit(s.json, "POST", "/predict", {"instances": [[1, 2, 3, 4]]})
                     for _ in range(3)]
            time.sleep(0.3)
            start = time.monotonic()
            assert s.request("GET", "/health")[0] == 200  # answered while the runs spin
            assert time.monotonic() - start < 0.5
            for f in spins:
                status, out = f.result(timeout=30)
                assert status == 503 and "took longer than 1 s" in out["error"]
        # A run in flight when SIGTERM comes: the server still ends within its grace period.
        pool = ThreadPoolExecutor(1)
        pool.submit(s.request, "POST", "/predict", json.dumps({"instances": [[1, 2, 3, 4]]}))
        time.sleep(0.3)
        start = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0
        assert time.monotonic() - start < 5
        pool.shutdown(wait=True)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_predict_cli_with_a_foreign_graph_stops_on_sigterm(hostile, tmp_path):
    model = hostile.loop_model(tmp_path / "spin.onnx")
    src = tmp_path / "in.csv"
    src.write_text("f0,f1,f2,f3\n1,2,3,4\n")
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([str(BIN / "linreg-predict"), str(model), str(src), "-o", str(out),
                             "--allow-foreign-graph"], stderr=subprocess.PIPE)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err) == (143, b"linreg-predict: error: stopped by SIGTERM\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "spin.onnx"]


@pytest.mark.parametrize("script", ["linreg-serve", "linreg-predict"])
def test_threads_are_bounded(tmp_path, script):
    args = [str(BIN / script), str(ONE), "--threads", "999999"]
    if script == "linreg-predict":
        args.insert(2, "-")
    res = subprocess.run(args, capture_output=True, timeout=60, input=b"")
    assert res.returncode == 2
    assert res.stderr.decode().startswith(f"{script}: error: Invalid value for '--threads': "
                                          "999999 is not in the range 0<=x<=")


# ------------------------------------------------------------------ under load

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_64_clients_with_hostile_requests_mixed_in(tmp_path):
    s = Server(MULTI, "--request-timeout", "10")
    good = json.dumps({"instances": [[1, 2, 3, 4], [0.5, 0, 0, 1]]})
    bad = [DEEP, '{"instances": [[' + HUGE_INT + ', 1, 2, 3]]}', '{"instances": [[1e400, 1, 2, 3]]}']
    want = expected(MULTI, np.array([[1, 2, 3, 4], [0.5, 0, 0, 1]])).tolist()
    counts = {"good": 0, "bad": 0, "5xx": 0, "wrong": 0}
    lock = threading.Lock()

    def client(i: int, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            body = bad[(i + n) % 3] if (i + n) % 4 == 0 else good
            status, _, data = s.request("POST", "/predict", body)
            with lock:
                if status >= 500:
                    counts["5xx"] += 1
                elif body is good:
                    counts["good"] += 1
                    if status != 200 or not np.allclose(json.loads(data)["predictions"], want,
                                                        rtol=1e-5):
                        counts["wrong"] += 1
                else:
                    counts["bad"] += 1
                    if status != 400:
                        counts["wrong"] += 1
            n += 1

    try:
        warm = time.monotonic() + 1.5
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda i: client(i, warm), range(64)))
        rss_before = _rss_kib(s.proc.pid)
        until = time.monotonic() + 4
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda i: client(i, until), range(64)))
        rss_after = _rss_kib(s.proc.pid)
        assert s.request("GET", "/health")[0] == 200
    finally:
        assert s.stop() == 0
    print(f"\n64 clients, 4 s: {counts}, server RSS {rss_before // 1024} -> {rss_after // 1024} MiB")
    assert counts["5xx"] == 0 and counts["wrong"] == 0, counts
    assert counts["good"] > 100 and counts["bad"] > 30, counts
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)  # flat: < 64 MiB growth
    logged = [ln for ln in s.stderr().splitlines() if ln.startswith("linreg-serve: 400 ")]
    assert len(logged) == counts["bad"]
    assert "Traceback" not in s.stderr()
