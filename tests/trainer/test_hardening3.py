"""Hardening, round 3, on the training side (issue #20): nothing a user wrote is ever deleted
(data-loss examples first), statistics never cost the fit, one line for every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.runtime.triton import is_own_config
from tests.conftest import BIN, run_script, write_csv
from tests.trainer.commands import export, train
from tests.trainer.test_export import _trained
from trainer.cli import synth_main, train_main

torch = pytest.importorskip("torch")


def _one_line(res, code: int = 1) -> str:
    assert res.exit_code == code, res.output + res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    return res.stderr.strip()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ never lose data: Triton

def test_a_hand_edited_triton_config_is_the_users(tmp_path):
    folder = _trained(tmp_path, "8x2")
    repo = tmp_path / "triton"
    export(folder, "--format", "triton", "--repository", repo, "-q")
    config = repo / "8x2" / "config.pbtxt"
    assert is_own_config(config)
    export(folder, "--format", "triton", "--repository", repo, "-q")  # linreg's own: rewritten
    edited = config.read_text().replace("count: 1", "count: 4")
    config.write_text(edited)
    assert not is_own_config(config)
    for flags in ((), ("--model-version", "2", "--force")):
        res = export(folder, "--format", "triton", "--repository", repo, "-q", *flags)
        assert config.read_text() == edited  # kept, with and without --force
        assert res.stderr == (f"linreg-export: warning: {config}: kept as it is (linreg did not "
                              "write it, or it was edited since); check that it still describes "
                              f"version {'3' if not flags else '2'}\n")
    assert sorted(p.name for p in (repo / "8x2").iterdir()) == ["1", "2", "3", "config.pbtxt"]


def test_a_version_folder_linked_to_the_trained_model_is_never_replaced(tmp_path):
    folder = _trained(tmp_path, "8x2")
    export(folder, "-q")
    before = _files(folder)
    assert {"model.pt", "history.csv", "model.torchscript.pt"} <= set(before)
    repo = tmp_path / "triton"
    (repo / "8x2").mkdir(parents=True)
    (repo / "8x2" / "1").symlink_to(folder, target_is_directory=True)
    res = export(folder, "--format", "triton", "--repository", repo, "--model-version", "1",
                 "--force", code=1)
    assert _one_line(res) == (f"linreg-export: error: {repo}/8x2/1: is a symbolic link (to "
                              f"{folder}); linreg never replaces what a link inside its output "
                              "points to: remove the link or choose another name")
    assert _files(folder) == before


def test_a_version_folder_holding_more_than_a_model_is_never_replaced(tmp_path):
    folder = _trained(tmp_path, "8x2")
    export(folder, "-q")
    repo = tmp_path / "triton"
    shutil.copytree(folder, repo / "8x2" / "1")  # a trained folder put there by hand
    before = _files(repo / "8x2" / "1")
    res = export(folder, "--format", "triton", "--repository", repo, "--model-version", "1",
                 "--force", code=1)
    assert _one_line(res) == (f"linreg-export: error: {repo}/8x2/1: not a linreg model folder (it "
                              "holds history.csv, inference.npz, model.pt, model.torchscript.pt);"
                              " --force replaces only what linreg wrote: choose another "
                              "--model-version")
    assert _files(repo / "8x2" / "1") == before


def test_a_model_folder_whose_manifest_is_not_linregs_is_never_replaced(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6.5]])
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.json").write_text('{"my": "own settings"}')  # a name linreg uses, not its file
    res = CliRunner().invoke(train_main, [str(data), "--out", str(out), "--force", "-q"])
    assert _one_line(res) == (f"linreg-train: error: {out}: not a linreg model folder (model.json "
                              "is missing or is not linreg's); --force replaces only what linreg "
                              "wrote: choose another --out")
    assert (out / "model.json").read_text() == '{"my": "own settings"}'


# ------------------------------------------------------------------ never lose data: checkpoints

def test_force_keeps_a_checkpoint_folder_holding_a_users_run_json(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6.5]])
    mine = tmp_path / "v.checkpoint"
    mine.mkdir()
    (mine / "run.json").write_text('{"my": "experiment log"}')
    res = CliRunner().invoke(train_main, [str(data), "--checkpoint-every", "10", "--out",
                                          str(tmp_path / "v"), "--force", "-q"])
    assert _one_line(res) == (f"linreg-train: error: {mine}: not a linreg checkpoint folder "
                              "(run.json is missing or is not linreg's); --force replaces only "
                              "what linreg wrote: choose another --out")
    assert (mine / "run.json").read_text() == '{"my": "experiment log"}'


def test_linregs_own_checkpoint_leftovers_are_linregs(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6.5]])
    out = tmp_path / "v"
    folder = tmp_path / "v.checkpoint"
    # what a SIGKILL during a checkpoint write leaves: our run.json and a temporary
    train(data, "--checkpoint-every", "10", "--out", out, "-q")
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"linreg": "checkpoint"}))
    (folder / ".checkpoint.pt.x7k2m9qa.tmp").write_bytes(b"half a checkpoint")
    train(data, "--checkpoint-every", "10", "--out", out, "--force", "-q")
    assert not folder.exists() and (out / "model.pt").exists()


def _interrupted_run(tmp_path: Path) -> Path:
    from trainer.config import TrainConfig
    from trainer.train import train as train_run

    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[i, 2 * i + 1] for i in range(20)])

    class Stop(KeyboardInterrupt):
        pass

    def stop(done: float) -> None:
        if done >= 30:
            raise Stop()
    with pytest.raises(Stop):
        train_run(data, out=tmp_path / "m", config=TrainConfig(epochs=100, log_every=0),
                  checkpoint_every=10, progress=stop)
    return tmp_path / "m.checkpoint"


def test_a_finished_resume_removes_only_linregs_files(tmp_path):
    folder = _interrupted_run(tmp_path)
    (folder / "notes.txt").write_text("why this run matters")
    res = CliRunner().invoke(train_main, ["--resume", str(folder), "-q"])
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (tmp_path / "m" / "model.pt").is_file()


@pytest.mark.parametrize("edit, says", [
    (lambda run: run.pop("targets"), "run.json has no 'targets'"),
    (lambda run: run["config"].update(epochs="100"), "config.epochs must be int, not '100'"),
    (lambda run: run.update(data_path=["a.csv", "b.csv"]), "'data_path' must be str"),
    (lambda run: run["config"].update(lr=-1.0), "--lr -1.0: must be a number"),
    (lambda run: run["config"].update(standardize="yes"), "config.standardize must be bool"),
    (lambda run: run.update(checkpoint_every=0), "'checkpoint_every' must be 1 or more"),
    (lambda run: run["encoding"].update(categorical="city"), "encoding.categorical must be"),
    (lambda run: run["config"].update(bogus=1), "config.bogus is not a setting"),
])
def test_a_hand_edited_run_json_is_one_line(tmp_path, edit, says):
    folder = _interrupted_run(tmp_path)
    run = json.loads((folder / "run.json").read_text())
    assert run["linreg"] == "checkpoint"
    edit(run)
    (folder / "run.json").write_text(json.dumps(run))
    res = CliRunner().invoke(train_main, ["--resume", str(folder), "-q"])
    line = _one_line(res)
    assert line.startswith(f"linreg-train: error: --resume {folder}: not a checkpoint folder of "
                           "an interrupted run (")
    assert says in line, line
    assert (folder / "checkpoint.pt").is_file()  # nothing lost: fix it and resume


# ------------------------------------------------------------------ one rule per flag

def test_synth_takes_the_seed_linreg_train_takes(tmp_path):
    res = CliRunner().invoke(synth_main, [str(tmp_path / "s.csv"), "--seed", "-1"])
    assert res.exit_code == 2 and not (tmp_path / "s.csv").exists()
    assert res.stderr == ("linreg-synth: error: Invalid value for '--seed': -1 is not in the "
                          "range 0<=x<=9223372036854775807.\n")
    res = CliRunner().invoke(train_main, [str(tmp_path / "s.csv"), "--seed", "-1"])
    assert res.stderr.replace("linreg-train", "linreg-synth") == \
        ("linreg-synth: error: Invalid value for '--seed': -1 is not in the range "
         "0<=x<=9223372036854775807.\n")


@pytest.mark.parametrize("count", ["2000", "100000"])
def test_nproc_beyond_the_machine_is_refused_before_any_process(tmp_path, count):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6.5]])
    start = time.monotonic()
    res = run_script("linreg-train", data, "--nproc", count, "--out", tmp_path / "m")
    assert res.returncode == 2 and time.monotonic() - start < 30
    limit = 4 * len(os.sched_getaffinity(0))
    assert res.stderr.decode() == (f"linreg-train: error: Invalid value for '--nproc': {count} "
                                   "processes is more than this machine can run well: use 1 to "
                                   f"{limit} (4 per core)\n")


@pytest.mark.slow
def test_no_rank_outlives_a_killed_launcher(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[i, 2 * i] for i in range(200)])
    proc = subprocess.Popen([str(BIN / "linreg-train"), str(data), "--nproc", "2",
                             "--epochs", "100000000", "--out", str(tmp_path / "m"), "-q"],
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def ranks() -> list[int]:
        out = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split() if int(p) != proc.pid]

    deadline = time.monotonic() + 120
    while len(ranks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(ranks()) >= 2, "the ranks did not start"
    proc.kill()  # SIGKILL: no handler of the launcher runs
    proc.wait()
    deadline = time.monotonic() + 30
    while ranks() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = ranks()
    for pid in left:
        os.kill(pid, 9)
    assert not left, "a rank outlived its launcher"


# ------------------------------------------------------------------ statistics never cost the fit

@pytest.mark.parametrize("solver", ["lstsq", "sgd"])
def test_a_perfect_fit_is_saved_with_its_statistics(tmp_path, solver):
    X = np.array([[1, 0], [0, 1], [1, 1], [2, 1], [3, 5], [4, 2]], dtype=float)
    y = X @ [1.0, 2.0] + 3.0
    data = write_csv(tmp_path / "d.csv", ["a", "b", "y"], np.column_stack([X, y]).tolist())
    args = [data, "--solver", solver, "--dtype", "float64", "--out", tmp_path / "m", "-q"]
    train(*args, *(["--lr", "0.05", "--epochs", "20000", "--init", "zeros"]
                   if solver == "sgd" else []))
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    np.testing.assert_allclose(manifest["model"]["coef_"], [[1.0, 2.0]], atol=1e-6)
    entry = manifest["statistics"][0]
    assert entry["r2"] == pytest.approx(1.0)
    summary = run_script("linreg-summary", tmp_path / "m")
    assert summary.returncode == 0 and b"Traceback" not in summary.stderr


def test_an_exact_zero_residual_design_reports_what_statsmodels_does():
    from trainer.stats import inference

    X = np.array([[1, 0], [0, 1], [1, 1], [2, 1], [3, 5]], dtype=float)
    y = (X @ [1.0, 2.0] + 3.0)[:, None]
    for cov in ("nonrobust", "HC0", "HC1", "HC2", "HC3"):
        entry = inference(X, y, np.array([[1.0, 2.0]]), np.array([3.0]), bias=True,
                          names=["a", "b"], cov_type=cov).per_target[0]
        assert entry["std_err"] == [0.0, 0.0, 0.0]  # statsmodels: zero standard errors
        assert {"t", "p_value", "f_stat"} <= set(entry["not_defined"])  # infinite there
        assert entry["r2"] == 1.0


_designs = st.sampled_from(["exact", "constant", "duplicate", "n_eq_p", "n_lt_p", "zero_weights",
                            "tiny_weights", "huge", "tiny", "one_row"])


@settings(max_examples=int(os.environ.get("LINREG_FUZZ_EXAMPLES", 150)), deadline=None,
          derandomize=os.environ.get("LINREG_FUZZ_RANDOM") != "1",
          suppress_health_check=list(HealthCheck))
@given(design=_designs, n=st.integers(1, 12), p=st.integers(1, 5), targets=st.integers(1, 2),
       bias=st.booleans(), cov=st.sampled_from(["nonrobust", "HC0", "HC1", "HC2", "HC3"]),
       seed=st.integers(0, 2**16))
def test_property_statistics_never_raise_on_degenerate_designs(design, n, p, targets, bias, cov,
                                                               seed):
    """Whatever the design, inference() returns a result whose every number is finite or null
    and whose not_defined says why a statistic is missing; it never raises."""
    from trainer.stats import inference

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    weights = None
    if design == "constant":
        X[:, 0] = 3.0
    elif design == "duplicate" and p > 1:
        X[:, 1] = X[:, 0]
    elif design == "n_eq_p":
        X = rng.normal(size=(p + int(bias), p))
    elif design == "n_lt_p":
        X = rng.normal(size=(max(1, p - 1), p))
    elif design == "huge":
        X = X * 1e150
    elif design == "tiny":
        X = X * 1e-160
    elif design == "one_row":
        X = X[:1]
    n = X.shape[0]
    coef = rng.normal(size=(targets, p))
    intercept = rng.normal(size=targets) if bias else np.zeros(targets)
    Y = X @ coef.T + intercept
    if design != "exact":
        Y = Y + rng.normal(size=Y.shape) * (0 if design == "n_eq_p" else 1)
    if design == "zero_weights":
        weights = rng.integers(0, 2, size=n).astype(float)
        weights[0] = 1.0
    elif design == "tiny_weights":
        weights = np.full(n, 1e-300)
    result = inference(X, Y, coef, intercept, bias=bias, names=[f"x{i}" for i in range(p)],
                       cov_type=cov, weights=weights)
    assert len(result.per_target) == targets
    for entry in result.per_target:
        json.dumps(entry, allow_nan=False)  # every number finite (or null)
        assert isinstance(entry["not_defined"], dict)
        for key in ("std_err", "t", "p_value", "f_stat", "sigma"):
            if entry.get(key) is None:
                assert key in entry["not_defined"] or key == "f_stat" and (
                    entry["df_model"] in (0, None)), (key, entry["not_defined"])
