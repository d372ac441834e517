"""The model repository in-process (no server): layouts, versions, broken folders, load and
unload, polling with atomic swaps, and the dynamic batcher. Runs without torch or FastAPI."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve.core.columns import Frame
from serve.core.errors import ModelError, NotReady, UnknownModel
from serve.server.batching import Batcher
from serve.server.repository import Repository
from tests.serve.conftest import MODELS, expected

X3 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])


def put(src: str, dest: Path) -> Path:
    """Copy a fixture model folder to ``dest`` (its model.onnx and model.json)."""
    dest.mkdir(parents=True)
    for name in ("model.onnx", "model.json"):
        shutil.copy2(MODELS / src / name, dest / name)
    return dest


def replace_by_rename(src: str, dest: Path) -> None:
    """Swap a model folder for another the way a deploy does: build it beside, then rename."""
    tmp = dest.with_name(f".{dest.name}.new")
    put(src, tmp)
    old = dest.with_name(f".{dest.name}.old")
    dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """Two models, one with two versions, a broken one, and what a repository must skip."""
    root = tmp_path / "repo"
    put("nobias", root / "m" / "1")
    put("f64", root / "m" / "2")
    put("one", root / "solo")
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"not onnx")
    put("one", root / ".solo.tmp-123")  # linreg's own temporary folder
    (root / "solo.checkpoint").mkdir()
    (root / "solo.checkpoint" / "run.json").write_text("{}")
    return root


def test_a_repository_serves_every_model_and_version(repo_dir):
    repo = Repository.open(repo_dir)
    assert repo.kind == "repository" and repo.names() == ["broken", "m", "solo"]
    assert repo.get("m").version == "2"  # the highest by default
    np.testing.assert_allclose(repo.get("m").predictor.predict(X3), expected(MODELS / "f64", X3))
    np.testing.assert_allclose(repo.get("m", "1").predictor.predict(X3),
                               expected(MODELS / "nobias", X3), rtol=1e-5)
    assert repo.versions("m") == ["1", "2"]
    index = repo.index()
    assert [(e["name"], e.get("version"), e["state"]) for e in index] == [
        ("broken", "1", "UNAVAILABLE"), ("m", "1", "READY"), ("m", "2", "READY"),
        ("solo", "1", "READY")]
    assert "not a readable ONNX model" in index[0]["reason"]
    assert [e["name"] for e in repo.index(ready_only=True)] == ["m", "m", "solo"]


def test_lookups_say_what_is_wrong(repo_dir):
    repo = Repository.open(repo_dir)
    with pytest.raises(UnknownModel, match=r"^unknown model 'x'; this server serves 'broken', "
                                           r"'m', 'solo'$"):
        repo.get("x")
    with pytest.raises(UnknownModel, match=r"^unknown version '7' of model 'm'; it has '1', "
                                           r"'2'$"):
        repo.get("m", "7")
    with pytest.raises(NotReady, match=r"^model 'broken' is not ready: .*broken/model.onnx"):
        repo.get("broken")


@pytest.mark.parametrize("layout", ["folder", "onnx", "versioned"])
def test_one_model_paths(tmp_path, layout):
    if layout == "folder":
        path = put("one", tmp_path / "mine")
    elif layout == "onnx":
        path = put("one", tmp_path / "x") / "model.onnx"
        path = path.rename(tmp_path / "mine.onnx")
    else:
        path = tmp_path / "mine"
        put("one", path / "1")
        put("one", path / "3")
    repo = Repository.open(path)
    assert repo.names() == ["mine"]
    assert repo.get("mine").version == ("3" if layout == "versioned" else "1")
    assert Repository.open(path, name="other").names() == ["other"]


def test_a_single_model_that_cannot_load_is_an_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    with pytest.raises(ModelError, match="no model.onnx; export it first"):
        Repository.open(tmp_path / "m")
    with pytest.raises(ModelError, match="no such model file, model folder or repository"):
        Repository.open(tmp_path / "none")
    with pytest.raises(ModelError, match="is a repository; its models are named after"):
        Repository.open(tmp_path, name="x")


def test_an_empty_folder_is_an_empty_repository(tmp_path):
    repo = Repository.open(tmp_path)
    assert repo.names() == [] and repo.index() == []


def test_a_model_folder_without_versions_is_listed_with_its_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    repo = Repository.open(tmp_path)
    assert repo.index() == [{"name": "empty", "state": "UNAVAILABLE", "reason": (
        f"{tmp_path}/empty: no model.onnx and no version folders (1/, 2/, ...); export a model "
        "into it (linreg-export)")}]


def test_unload_and_load(repo_dir):
    repo = Repository.open(repo_dir)
    held = repo.get("m")  # a request in flight keeps its version
    repo.unload("m")
    with pytest.raises(NotReady, match="'m' is not ready: unloaded"):
        repo.get("m")
    assert held.predictor.predict(X3).shape == (2, 1)
    repo.poll()
    repo.poll()
    assert repo.index()[1] == {"name": "m", "state": "UNAVAILABLE", "reason": "unloaded"}
    repo.load("m")
    assert repo.get("m").version == "2"
    with pytest.raises(UnknownModel, match="no model folder 'nope'"):
        repo.load("nope")
    with pytest.raises(ModelError, match="failed to load 'broken': .*not a readable ONNX"):
        repo.load("broken")
    with pytest.raises(UnknownModel, match="unknown model 'nope'"):
        repo.unload("nope")


def test_poll_adds_swaps_and_removes(repo_dir):
    repo = Repository.open(repo_dir)
    retired = []
    repo.on_swap = retired.append
    # 1. A new model appears.
    put("multi", repo_dir / "new")
    repo.poll()
    assert repo.get("new").predictor.n_targets == 2
    # 2. A model folder replaced by rename: the new one is served, the old one retired.
    before = repo.get("solo")
    replace_by_rename("f64", repo_dir / "solo")
    repo.poll()
    after = repo.get("solo")
    assert after is not before and after.predictor.n_features == 3
    assert retired == [before]
    # 3. A new version, and a version removed: gone only when two polls in a row miss it.
    put("nobias", repo_dir / "m" / "3")
    shutil.rmtree(repo_dir / "m" / "1")
    repo.poll()
    assert repo.versions("m") == ["1", "2", "3"]
    repo.poll()
    assert repo.versions("m") == ["2", "3"] and repo.get("m").version == "3"
    # 4. A model removed from disk.
    shutil.rmtree(repo_dir / "new")
    repo.poll()
    assert "new" in repo.names()
    repo.poll()
    assert "new" not in repo.names()
    # 5. The broken model fixed on disk.
    shutil.rmtree(repo_dir / "broken")
    put("one", repo_dir / "broken")
    repo.poll()
    assert repo.get("broken").predictor.n_features == 1


def test_a_failed_reload_keeps_the_version_being_served(repo_dir):
    repo = Repository.open(repo_dir)
    before = repo.get("solo")
    (repo_dir / "solo" / "model.onnx").write_bytes(b"garbage")
    repo.poll()
    assert repo.get("solo") is before
    entry = [e for e in repo.index() if e["name"] == "solo"][0]
    assert entry["state"] == "READY"
    assert entry["reason"].startswith("reloading failed, still serving the version loaded before")
    shutil.copy2(MODELS / "one" / "model.onnx", repo_dir / "solo" / "model.onnx")  # repaired
    repo.poll()
    assert "reason" not in [e for e in repo.index() if e["name"] == "solo"][0]
    np.testing.assert_allclose(repo.get("solo").predictor.predict([[2.0]]),
                               expected(MODELS / "one", [[2.0]]), rtol=1e-6)


def test_requests_during_swaps_always_get_a_whole_model(repo_dir):
    """A thread swapping the model folder back and forth while others predict: every answer
    is one of the two models' exact answers, never an error."""
    repo = Repository.open(repo_dir)
    put("nobias", repo_dir / "flip")
    repo.load("flip")
    answers = {tuple(np.round(expected(MODELS / m, X3)[:, 0], 4)) for m in ("nobias", "f64")}
    stop, failures, seen = threading.Event(), [], set()

    def client() -> None:
        while not stop.is_set():
            try:
                got = repo.get("flip").predictor.predict(X3)
                key = tuple(np.round(got[:, 0].astype(float), 4))
                if key not in answers:
                    failures.append(key)
                seen.add(key)
            except Exception as e:  # noqa: BLE001 - any failure fails the test
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(6):
        replace_by_rename("f64" if i % 2 == 0 else "nobias", repo_dir / "flip")
        repo.poll()
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [] and seen == answers


# ------------------------------------------------------------------ the dynamic batcher

def test_batcher_merges_and_splits():
    calls = []

    def run(rows):
        calls.append(len(rows))
        return {"prediction": rows * 2.0}

    batcher = Batcher(run, max_delay=0.2, max_rows=10)
    futures = [batcher.submit(np.full((2, 1), float(i))) for i in range(4)]
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(5)["prediction"], np.full((2, 1), 2.0 * i))
    assert calls == [8]
    big = batcher.submit(np.ones((25, 1)))  # larger than max_rows: runs alone
    assert big.result(5)["prediction"].shape == (25, 1)
    batcher.close()


def test_batcher_stacks_frames():
    def run(frame):
        return {"prediction": frame.arrays["a"] + 1.0}

    batcher = Batcher(run, max_delay=0.1, max_rows=100)
    parts = [Frame({"a": np.full((n, 1), float(n))}, n) for n in (1, 2, 3)]
    futures = [batcher.submit(p) for p in parts]
    for n, f in zip((1, 2, 3), futures):
        np.testing.assert_array_equal(f.result(5)["prediction"], np.full((n, 1), n + 1.0))
    batcher.close()


def test_a_bad_request_in_a_batch_fails_alone():
    batches = []

    def run(rows):
        if (rows < 0).any():
            raise ValueError(f"negative row among {len(rows)}")
        return {"prediction": rows}

    batcher = Batcher(run, max_delay=0.2, max_rows=100,
                      on_batch=lambda requests, rows: batches.append((requests, rows)))
    good = [batcher.submit(np.ones((1, 1))) for _ in range(3)]
    bad = batcher.submit(-np.ones((2, 1)))
    assert all(f.result(5)["prediction"].shape == (1, 1) for f in good)
    with pytest.raises(ValueError, match="^negative row among 2$"):
        bad.result(5)
    assert batches == [(4, 5)]
    batcher.close()


def test_a_closed_batcher_answers_what_was_queued():
    gate = threading.Event()

    def run(rows):
        gate.wait(5)
        return {"prediction": rows}

    batcher = Batcher(run, max_delay=0.0, max_rows=1)
    first = batcher.submit(np.ones((1, 1)))
    second = batcher.submit(np.ones((1, 1)))
    batcher.close()
    gate.set()
    assert first.result(5) and second.result(5)
    batcher._thread.join(5)
    assert not batcher._thread.is_alive()  # ended once idle
    late = batcher.submit(np.ones((1, 1)))  # a request that took the version before the swap
    assert late.result(5)["prediction"].shape == (1, 1)


def test_version_folders_ignore_non_versions(tmp_path):
    put("one", tmp_path / "m" / "1")
    (tmp_path / "m" / "01").mkdir()
    (tmp_path / "m" / "notes").mkdir()
    (tmp_path / "m" / "2").write_text("a file, not a folder")
    assert Repository.open(tmp_path / "m").versions("m") == ["1"]
    assert os.path.isdir(tmp_path / "m" / "01")
