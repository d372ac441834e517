"""Seeded property-based fuzzing (hypothesis) of everything that parses input.

Valid files and request bodies are mutated (bytes flipped, inserted, deleted, truncated, lines
repeated, hostile tokens such as ``1e400``, ``0x1F``, ``\\xff``, deep brackets spliced in), then:
- ``linreg-predict`` and ``linreg-train`` either succeed, or exit 1 or 2 with exactly one line on
  stderr, no traceback, and nothing at the output path (no temporary either);
- every HTTP route answers 2xx, or 4xx with a JSON ``{"error": ...}``, never a 5xx, and the
  server still answers ``/health`` after every case.

Runs are derandomized (the same cases every run) and bounded: ``LINREG_FUZZ_EXAMPLES`` sets the
examples per property (default 150). The case count is printed at the end of the session.
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.cli import predict_main
from tests.serve.conftest import MODELS

pytestmark = pytest.mark.slow
MULTI = MODELS / "multi"  # x0..x3 -> y0, y1
EXAMPLES = int(os.environ.get("LINREG_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("LINREG_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck))
CASES: dict[str, int] = {}

TOKENS = [b",", b"\n", b"\r\n", b'"', b"nan", b"inf", b"-inf", b"1e400", b"0x1F", b"1_000",
          b"true", b"\xff", b"\xef\xbb\xbf", b"\x00", b"[" * 300, b"{" * 300, b"]", b"}",
          b"1" * 400, b" ", b"x0", b"y0", b"-", b"e", b".", b"\x1f\x8b", b"NUMPY", b"PAR1",
          b"\\u0000", b"null", b":", b"9" * 30,
          # lone surrogates as JSON spells them, and as bytes that are not UTF-8
          b"\\ud800", b"\\udfff", b'"\\udc00":', b"\\ud83d\\ude00", b"\xed\xa0\x80", b"caf\xe9"]


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with up to six mutations: flips, inserts, deletes, truncation, repeats."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat", "token"]))
        at = draw(st.integers(0, max(0, len(data))))
        if kind == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = bytes(data[at:at + draw(st.integers(1, 64))]) * draw(st.integers(2, 50))
        else:
            data[at:at] = draw(st.sampled_from(TOKENS))
    return bytes(data)


def _count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    total = sum(CASES.values())
    print(f"\nfuzz cases run: {total} ({', '.join(f'{k} {v}' for k, v in sorted(CASES.items()))})")


# ------------------------------------------------------------------ seeds: valid inputs

def _rows(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 4)).round(3)


def _seed_file(fmt: str, with_targets: bool = False) -> bytes:
    rows = _rows()
    names = ["x0", "x1", "x2", "x3"]
    if with_targets:
        rows = np.hstack([rows, rows[:, :1] * 2 + 1])
        names = names + ["y"]
    if fmt == "csv":
        return (",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
                ).encode()
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(names, r))) + "\n" for r in rows.tolist()).encode()
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, rows)
    elif fmt == "npz":
        np.savez(buf, X=rows[:, :4], y=rows[:, -1], feature_names=np.array(names[:4]))
    else:
        pq.write_table(pa.table({n: rows[:, i] for i, n in enumerate(names)}), buf)
    return buf.getvalue()


def _check_cli(result, out: Path) -> None:
    """Success, or one clean line of error and nothing written."""
    if result.exit_code == 0:
        return
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (1, 2), result.exit_code
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(("linreg-predict: error: ", "linreg-train: error: "))
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ files into the CLIs

@pytest.mark.parametrize("fmt", ["csv", "jsonl", "npy", "parquet"])
def test_fuzz_files_into_linreg_predict(tmp_path, fmt):
    seed = _seed_file(fmt)

    @FUZZ
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        _count(f"predict-{fmt}")
        src = tmp_path / f"in.{fmt}"
        src.write_bytes(data)
        out = tmp_path / "out.csv"
        if out.exists():
            out.unlink()
        res = CliRunner().invoke(predict_main, [str(MULTI), str(src), "-o", str(out), "-q",
                                                "--batch-rows", "3"])
        _check_cli(res, out)

    run()


def test_fuzz_stdin_into_linreg_predict(tmp_path):
    seed = _seed_file("csv")

    @FUZZ
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        _count("predict-stdin")
        out = tmp_path / "out.csv"
        if out.exists():
            out.unlink()
        res = CliRunner().invoke(predict_main, [str(MULTI), "-", "-o", str(out), "-q"],
                                 input=data)
        _check_cli(res, out)

    run()


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz", "parquet"])
def test_fuzz_files_into_linreg_train(tmp_path, fmt):
    pytest.importorskip("torch")
    from trainer.cli import train_main

    seed = _seed_file(fmt, with_targets=True)

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        _count(f"train-{fmt}")
        src = tmp_path / f"in.{fmt}"
        src.write_bytes(data)
        out = tmp_path / "m"
        res = CliRunner().invoke(train_main, [str(src), "--out", str(out), "-q", "--epochs",
                                              "3", "--force"])
        _check_cli(res, out)
        if out.exists():
            import shutil
            shutil.rmtree(out)

    run()


# ------------------------------------------------------------------ bodies into every route

def _serving(model: Path):
    pytest.importorskip("fastapi")
    from tests.serve.test_server import Server

    s = Server(model, "--max-rows", "1000", "--request-timeout", "5")
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.stderr()


@pytest.fixture(scope="module")
def server():
    yield from _serving(MULTI)


JSON_SEEDS = {
    "/predict": {"instances": _rows(3).tolist()},
    "/v1/models/multi:predict": {"inputs": {f"x{i}": _rows(2)[:, i].tolist() for i in range(4)}},
    "/v2/models/multi/infer": {"id": "a", "inputs": [{"name": "features", "datatype": "FP32",
                                                      "shape": [2, 4],
                                                      "data": _rows(2).ravel().tolist()}],
                               "outputs": [{"name": "prediction"}]},
    "/invocations": {"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"],
                                         "data": _rows(2).tolist()}},
}


def _check_http(server, status: int, data: bytes) -> None:
    assert status < 500, (status, data[:300])
    if status >= 400:
        assert isinstance(json.loads(data).get("error"), str)
    assert server.request("GET", "/health")[0] == 200


def _fuzz_json(server, route: str, seed: dict, name: str) -> None:
    @FUZZ
    @given(body=mutated(json.dumps(seed).encode()))
    def run(body: bytes) -> None:
        _count(f"{name}{route}")
        status, _, data = server.request("POST", route, body,
                                         {"Content-Type": "application/json"})
        _check_http(server, status, data)

    run()


def _fuzz_binary(server, route: str, head: bytes, raw: bytes, name: str) -> None:
    @FUZZ
    @given(head=mutated(head), raw=mutated(raw), skew=st.integers(-40, 40))
    def run(head: bytes, raw: bytes, skew: int) -> None:
        _count(name)
        status, _, data = server.request(
            "POST", route, head + raw,
            {"Content-Type": "application/octet-stream",
             "Inference-Header-Content-Length": str(len(head) + skew)})
        if status == 200:
            return
        _check_http(server, status, data)

    run()


@pytest.mark.parametrize("route", list(JSON_SEEDS))
def test_fuzz_json_bodies_into_every_route(server, route):
    _fuzz_json(server, route, JSON_SEEDS[route], "http-json")


def test_fuzz_csv_bodies(server):
    seed = _seed_file("csv")

    @FUZZ
    @given(body=mutated(seed))
    def run(body: bytes) -> None:
        _count("http-csv")
        status, _, data = server.request("POST", "/invocations", body,
                                         {"Content-Type": "text/csv"})
        _check_http(server, status, data)

    run()


def test_fuzz_binary_tensor_bodies(server):
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                                   "parameters": {"binary_data_size": 32}}],
                       "outputs": [{"name": "prediction",
                                    "parameters": {"binary_data": True}}]}).encode()
    raw = struct.pack("<8f", *_rows(2).ravel())
    _fuzz_binary(server, "/v2/models/multi/infer", head, raw, "http-binary")


# ------------------------------------------------------------------ tabular models (raw columns)

TAB = MODELS / "tabular"  # city (categorical), x1 (filled), x2 -> y
TAB_CSV = b"city,x1,x2\nParis,,0.5\nRome,12,-1\nLyon,7.5,2\n"
TAB_JSONL = b'{"city":"Paris","x1":null,"x2":0.5}\n{"city":"Rome","x1":12,"x2":-1}\n'
TAB_TRAIN = (MODELS.parent / "tabular.csv").read_bytes()[:1500]


@pytest.mark.parametrize("fmt, seed", [("csv", TAB_CSV), ("jsonl", TAB_JSONL)])
def test_fuzz_raw_values_into_linreg_predict(tmp_path, fmt, seed):
    @FUZZ
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        _count(f"predict-tabular-{fmt}")
        src, out = tmp_path / f"in.{fmt}", tmp_path / "out.csv"
        src.write_bytes(data)
        if out.exists():
            out.unlink()
        res = CliRunner().invoke(predict_main, [str(TAB), str(src), "-o", str(out), "-q",
                                                "--batch-rows", "2"])
        _check_cli(res, out)

    run()


def test_fuzz_tabular_csv_into_linreg_train(tmp_path):
    pytest.importorskip("torch")
    from trainer.cli import train_main

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
    @given(data=mutated(TAB_TRAIN), impute=st.sampled_from([[], ["--impute", "median"]]))
    def run(data: bytes, impute: list[str]) -> None:
        _count("train-tabular-csv")
        src, out = tmp_path / "in.csv", tmp_path / "m"
        src.write_bytes(data)
        res = CliRunner().invoke(train_main, [str(src), "--out", str(out), "-q", "--solver",
                                              "lstsq", "--max-levels", "20", "--force", *impute])
        _check_cli(res, out)
        if out.exists():
            import shutil
            shutil.rmtree(out)

    run()


@pytest.fixture(scope="module")
def tab_server():
    yield from _serving(TAB)


TAB_SEEDS = {
    "/predict": {"instances": [{"city": "Paris", "x1": None, "x2": 0.5},
                               {"city": "Rome", "x1": 12, "x2": -1}]},
    "/v2/models/tabular/infer": {"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": ["Paris", "Rome"]},
        {"name": "x1", "datatype": "FP64", "shape": [2], "data": [None, 12]},
        {"name": "x2", "datatype": "FP64", "shape": [2, 1], "data": [0.5, -1]}]},
    "/invocations": {"dataframe_split": {"columns": ["city", "x1", "x2"],
                                         "data": [["Paris", None, 0.5], ["Lyon", "7", 2]]}},
}


@pytest.mark.parametrize("route", list(TAB_SEEDS))
def test_fuzz_raw_values_into_every_route(tab_server, route):
    _fuzz_json(tab_server, route, TAB_SEEDS[route], "http-tabular")


def test_fuzz_binary_bytes_tensors(tab_server):
    cities = b"".join(struct.pack("<I", len(c)) + c for c in (b"Paris", b"Rome"))
    floats = struct.pack("<2d", 1.0, float("nan")) + struct.pack("<2d", 0.5, -1.0)
    head = json.dumps({"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [2, 1],
         "parameters": {"binary_data_size": len(cities)}},
        {"name": "x1", "datatype": "FP64", "shape": [2, 1], "parameters": {"binary_data_size": 16}},
        {"name": "x2", "datatype": "FP64", "shape": [2, 1],
         "parameters": {"binary_data_size": 16}}]}).encode()
    _fuzz_binary(tab_server, "/v2/models/tabular/infer", head, cities + floats,
                 "http-tabular-binary")


# ------------------------------------------------------------------ every training flag together

FLAG_CHOICES = {
    "--solver": ["sgd", "lstsq"], "--optimizer": ["sgd", "adam", "lbfgs"],
    "--loss": ["mse", "huber"], "--penalty": ["none", "l2", "l1", "elasticnet"],
    "--alpha": ["0.01", "1"], "--lr-schedule": ["constant", "step", "cosine", "plateau"],
    "--batch-size": ["0", "7"], "--val-fraction": ["0.25"], "--impute": ["mean", "median"],
    "--cov": ["nonrobust", "HC3"], "--lr": ["0.05", "1"], "--momentum": ["0", "0.9"],
    "--weight-decay": ["0", "0.01"], "--dtype": ["float32", "float64"],
}
FLAGS = ["--standardize", "--no-bias", "--early-stopping", "--missing-indicator", "--summary",
         "--plot"]


def test_fuzz_training_flags_together(tmp_path):
    """Any combination of settings trains, or ends in one line naming what cannot work."""
    pytest.importorskip("torch")
    from trainer.cli import export_main, train_main

    lines = (MODELS.parent / "tabular.csv").read_text().splitlines()
    data = tmp_path / "weighted.csv"  # the tabular table plus a positive weight column
    data.write_text("\n".join([lines[0] + ",w"] + [f"{line},{0.5 + (i % 5) * 0.3:g}"
                                                    for i, line in enumerate(lines[1:])]) + "\n")

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
    @given(options=st.dictionaries(st.sampled_from(sorted(FLAG_CHOICES)), st.just(None),
                                   max_size=7),
           picks=st.lists(st.integers(0, 3), min_size=14, max_size=14),
           flags=st.lists(st.sampled_from(FLAGS), unique=True, max_size=3),
           weights=st.booleans(), checkpoint=st.booleans())
    def run(options, picks, flags, weights, checkpoint) -> None:
        _count("train-flags")
        out = tmp_path / "m"
        args = [str(data), "--out", str(out), "-q", "--epochs", "30", "--force",
                "--log-every", "0", "--impute", "mean", *flags]
        for (name, _), pick in zip(sorted(options.items()), picks):
            choices = FLAG_CHOICES[name]
            args += [name, choices[pick % len(choices)]]
        args += ["--sample-weight", "w"] if weights else ["--exclude", "w"]
        if checkpoint:
            args += ["--checkpoint-every", "7"]
        res = CliRunner().invoke(train_main, args)
        if res.exit_code == 0:
            assert out.is_dir()
            exported = CliRunner().invoke(export_main, [str(out), "-q", "--format", "onnx"])
            assert exported.exit_code in (0, 1), exported.stderr
            if exported.exit_code:  # e.g. a diverged float32 fit the exporter refuses
                assert exported.stderr.count("\n") == 1, exported.stderr
        else:
            _check_cli(res, out)
        assert not (tmp_path / "m.checkpoint").exists()
        if out.exists():
            import shutil
            shutil.rmtree(out)

    run()


# ------------------------------------------------------------------ gRPC ModelInfer

@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory):
    """linreg-serve on a repository of the numeric and the tabular model, with gRPC."""
    pytest.importorskip("fastapi")
    pytest.importorskip("tritonclient.grpc")
    import shutil

    from tests.serve.test_server import Server, free_port

    root = tmp_path_factory.mktemp("fuzz-grpc")
    for model in (MULTI, TAB):
        shutil.copytree(model, root / model.name)
    port = free_port()
    s = Server(root, "--grpc-port", str(port), "--max-rows", "1000", "--request-timeout", "5",
               "--max-body-bytes", "100000")
    s.grpc_port = port
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.stderr()


# A refusal is one of these statuses; INTERNAL or UNKNOWN would be a bug of ours.
GRPC_REFUSALS = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED",
                 "FAILED_PRECONDITION")


def _grpc_seeds() -> dict[str, bytes]:
    from tritonclient.grpc import service_pb2 as pb

    numeric = pb.ModelInferRequest(model_name="multi", id="a",
                                   raw_input_contents=[_rows(2).astype("<f4").tobytes()])
    numeric.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    numeric.outputs.add(name="prediction")
    tab = pb.ModelInferRequest(model_name="tabular")
    city = b"".join(struct.pack("<I", len(c)) + c for c in (b"Paris", b"Rome"))
    tab.inputs.add(name="city", datatype="BYTES", shape=[2, 1])
    tab.inputs.add(name="x1", datatype="FP64", shape=[2, 1])
    tab.inputs.add(name="x2", datatype="FP64", shape=[2])
    tab.raw_input_contents.extend([city, np.array([np.nan, 12.0]).tobytes(),
                                   np.array([0.5, -1.0]).tobytes()])
    typed = pb.ModelInferRequest(model_name="multi")
    t = typed.inputs.add(name="features", datatype="FP64", shape=[1, 4])
    t.contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0])
    return {"raw": numeric.SerializeToString(), "bytes": tab.SerializeToString(),
            "typed": typed.SerializeToString()}


@pytest.mark.parametrize("kind", ["raw", "bytes", "typed"])
def test_fuzz_grpc_model_infer(grpc_server, kind):
    """Mutated ModelInferRequest messages (bytes on the wire): an answer or a refusal status,
    never INTERNAL, and the server still live after every case."""
    import grpc

    seed = _grpc_seeds()[kind]
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_server.grpc_port}")
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
    assert infer(seed, timeout=10)  # the seed itself is answered

    @FUZZ
    @given(body=mutated(seed))
    def run(body: bytes) -> None:
        _count(f"grpc-{kind}")
        try:
            infer(body, timeout=10)
        except grpc.RpcError as e:
            assert e.code().name in GRPC_REFUSALS, (e.code(), e.details())
            assert e.details() and "\n" not in e.details()
        assert live(b"", timeout=10) == b"\x08\x01"  # live: true

    run()
    channel.close()


# ------------------------------------------------------------------ names, folders, run.json

# Names as users and hostile files write them: ASCII, accents, digits of other scripts, empty,
# repeated, lone surrogates (what a non-UTF-8 byte decodes to with surrogateescape).
NAME = st.one_of(st.sampled_from(["x0", "x1", "x2", "x3", "", "²", "١", "x\ud800", "caf\udce9",
                                  "y0", " ", "a,b", "\x00"]),
                 st.text(max_size=6))


def test_fuzz_metadata_names_into_the_predictor(tmp_path):
    """Any feature/target names in a model's metadata load as usable names (text, unique, as
    many as the graph's columns) or are refused at load with one ModelError."""
    onnx = pytest.importorskip("onnx")
    from serve import Predictor
    from serve.core.errors import ModelError

    base = onnx.load(str(MULTI / "model.onnx"))

    @FUZZ
    @given(features=st.lists(NAME, max_size=5), targets=st.lists(NAME, max_size=3),
           raw=st.booleans())
    def run(features, targets, raw) -> None:
        _count("metadata-names")
        model = onnx.ModelProto()
        model.CopyFrom(base)
        for prop in model.metadata_props:
            if prop.key in ("feature_names", "target_names"):
                names = features if prop.key == "feature_names" else targets
                prop.value = json.dumps(names) if not raw else ",".join(
                    n.encode("utf-8", "replace").decode() for n in names)
        path = tmp_path / "m.onnx"
        onnx.save(model, str(path))
        try:
            predictor = Predictor.load(path)
        except ModelError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
            return
        for names in (predictor.feature_names, predictor.target_names):
            assert len(set(names)) == len(names) and all(names)
            "".join(names).encode("utf-8")
        assert predictor.predict(_rows(2)).shape == (2, 2)

    run()


def _put_model(folder: Path) -> None:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.json"):
        shutil.copy2(MULTI / name, folder / name)


ENTRY = st.sampled_from([b"1", b"2", b"10", b"01", b"0", "²".encode(), "١".encode(), b"caf\xe9",
                         b"model", b"m", b".hidden", b"x.checkpoint", "é".encode()])
KIND = st.sampled_from(["model", "versioned", "empty", "file", "loop", "link-up", "link-model",
                        "bad-onnx"])


def test_fuzz_repository_layouts_scan_load_and_triton_export(tmp_path):
    """Any repository state (odd version names, non-UTF-8 names, links, loops, files, broken
    models): the scan, every poll, load and the index never raise anything but linreg's own
    errors, list only text, and a Triton export into it either succeeds or is one LinregError,
    never touching what it did not write."""
    import shutil

    from serve.core.errors import LinregError
    from serve.runtime.triton import write_repository
    from serve.server.repository import Repository

    @FUZZ
    @given(entries=st.lists(st.tuples(ENTRY, KIND, ENTRY), min_size=1, max_size=5),
           version=st.one_of(st.none(), st.integers(1, 3)), force=st.booleans())
    def run(entries, version, force) -> None:
        _count("repository-layouts")
        root = tmp_path / "repo"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        broot = os.fsencode(root)
        for name, kind, inner in entries:
            path = broot + b"/" + name
            if os.path.lexists(path):
                continue
            if kind == "model":
                _put_model(Path(os.fsdecode(path)))
            elif kind == "versioned":
                _put_model(Path(os.fsdecode(path + b"/" + inner)))
            elif kind == "empty":
                os.makedirs(path)
            elif kind == "file":
                Path(os.fsdecode(path)).write_bytes(b"not a model")
            elif kind == "loop":
                os.makedirs(path)
                os.symlink(b".", path + b"/" + inner)
            elif kind == "link-up":
                os.symlink(b"..", path)
            elif kind == "link-model":
                os.symlink(os.fsencode(MULTI), path)
            else:
                os.makedirs(path + b"/" + inner)
                Path(os.fsdecode(path + b"/" + inner + b"/model.onnx")).write_bytes(b"junk")
        outside = {p: p.read_bytes() for p in MULTI.iterdir()}
        try:  # the root itself may be one (versioned) model that cannot load: one error
            repo = Repository.open(root)
        except LinregError as e:
            assert "\n" not in str(e)
        else:
            repo.poll()
            repo.poll()
            json.dumps(repo.index()).encode("utf-8")
            for name in repo.names():
                name.encode("utf-8")
                try:
                    repo.load(name, quiet=True)
                except LinregError:
                    pass
        name = os.fsdecode(entries[0][0])
        try:
            folder, chosen = write_repository(MULTI, root, name=name, version=version,
                                              force=force)
        except LinregError as e:
            assert "\n" not in str(e)
        else:
            assert (folder / chosen / "model.onnx").read_bytes() == outside[MULTI / "model.onnx"]
        assert {p: p.read_bytes() for p in MULTI.iterdir()} == outside  # never the source

    run()


def test_fuzz_model_names_given_to_the_server(tmp_path):
    """``--name`` (or a folder's name) that is not text is one ModelError; any other serves."""
    from serve.core.errors import ModelError
    from serve.server.repository import Repository

    @FUZZ
    @given(name=NAME)
    def run(name) -> None:
        _count("serve-name")
        try:
            repo = Repository.open(MULTI, name=name or None)
        except ModelError as e:
            assert "Unicode text" in str(e)
            return
        json.dumps(repo.index()).encode("utf-8")

    run()


RUN_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(),
                       st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def test_fuzz_run_json_mutations_into_resume(tmp_path):
    """A hand-edited run.json (keys dropped, values of any type) resumes, or is one line
    (exit 1) that keeps the checkpoint; never a traceback."""
    pytest.importorskip("torch")
    import shutil

    from trainer.cli import train_main
    from trainer.config import TrainConfig
    from trainer.train import train

    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(20)))

    class Stop(KeyboardInterrupt):
        pass

    def stop(done: float) -> None:
        if done >= 20:
            raise Stop()
    with pytest.raises(Stop):
        train(data, out=tmp_path / "m", config=TrainConfig(epochs=40, log_every=0),
              checkpoint_every=10, progress=stop)
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "m.checkpoint", pristine)
    run_json = json.loads((pristine / "run.json").read_text())

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 2))
    @given(drop=st.lists(st.sampled_from(sorted(run_json)), max_size=2),
           section=st.sampled_from(["", "config", "encoding"]),
           key=st.sampled_from(sorted(run_json) + sorted(run_json["config"]) +
                               sorted(run_json["encoding"]) + ["extra"]),
           value=RUN_VALUES)
    def run(drop, section, key, value) -> None:
        _count("run-json")
        folder = tmp_path / "case.checkpoint"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(tmp_path / "case", ignore_errors=True)
        shutil.copytree(pristine, folder)
        edited = json.loads(json.dumps(run_json))
        edited["out"] = str(tmp_path / "case")
        for k in drop:
            edited.pop(k, None)
        target = edited.get(section) if section else edited
        if isinstance(target, dict):
            target[key] = value
        (folder / "run.json").write_text(json.dumps(edited))
        res = CliRunner().invoke(train_main, ["--resume", str(folder), "-q"])
        if res.exit_code == 0:
            return
        assert isinstance(res.exception, SystemExit), repr(res.exception)
        assert res.exit_code in (1, 2), res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert (folder / "checkpoint.pt").is_file()

    run()


# ------------------------------------------------------------------ formulas into linreg-train

FORMULA_TOKENS = ["y", "~", "x1", "x2", "city", "C(city)", "C(city, Sum)", "+", "-", "*", ":",
                  "1", "0", "(", ")", ",", "I(x2 ** 2)", "np.log(", "np.exp(x2)", "center(x2)",
                  "standardize(x1)", "bs(x2, df=4)", "poly(x2, 2)", "poly(x1, 9)", "bs(", "df=",
                  "Treatment('Rome')", "C(city, Treatment('Nice'))", "np.log(y)", "zzz",
                  "__import__('os')", "x2.real", "[1]", "lambda", "'", "**", "/", "1e400",
                  "cr(x2, df=3)", "np.sqrt(x1 - 100)"]


def test_fuzz_formulas_into_linreg_train(tmp_path):
    """Any --formula text, valid or not: a model, or one line of error, never a traceback."""
    pytest.importorskip("torch")
    from trainer.cli import train_main

    src = tmp_path / "in.csv"
    src.write_bytes(TAB_TRAIN)

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
    @given(tokens=st.lists(st.sampled_from(FORMULA_TOKENS), min_size=1, max_size=9),
           head=st.booleans())
    def run(tokens: list[str], head: bool) -> None:
        _count("train-formula")
        formula = " ".join((["y", "~"] if head else []) + tokens)
        out = tmp_path / "m"
        res = CliRunner().invoke(train_main, [str(src), "--formula", formula, "--impute", "mean",
                                              "--solver", "lstsq", "--out", str(out), "-q",
                                              "--force"])
        _check_cli(res, out)
        if out.exists():
            import shutil
            shutil.rmtree(out)

    run()
