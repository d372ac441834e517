"""The README runs as written: every ```python snippet and every ```sh command, in a folder
prepared like `make demo` (data/example.csv, models/example), with the HTTP snippets pointed at a
real linreg-serve. Synopses and outputs are ```text blocks and are checked differently: every
option of every command's --help appears in the README, and every option the README shows
exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from tests.conftest import BIN, run_script

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)
torch = pytest.importorskip("torch", reason="the README's walk-through trains models")
# Covered elsewhere, on purpose: `make` is CI itself; npm installs and the browser page run in
# tests/test_embed.py.
NOT_HERE = ("make ", "cd examples/web", "python3 -m http.server", "cd examples/node && npm ci")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for args in (["linreg-synth", "data/example.csv", "--samples", "1000", "--features", "3",
                  "--seed", "0", "-q"],
                 ["linreg-train", "data/example.csv", "--standardize", "--val-fraction", "0.2",
                  "-q"],
                 ["linreg-export", "models/example", "-q"]):
        res = run_script(*args, cwd=work)
        assert res.returncode == 0, res.stderr
    (work / "examples" / "data").mkdir(parents=True)
    for table in ("homes.csv", "cars.csv"):  # the tabular walk-throughs' tables
        shutil.copy(ROOT / "examples" / "data" / table, work / "examples" / "data")
    return work


@pytest.fixture(scope="module")
def port(workspace):
    from tests.serve.test_server import Server

    pytest.importorskip("fastapi")
    s = Server(workspace / "models" / "example")
    yield s.port
    assert s.stop() == 0


def _commands(body: str) -> list[str]:
    lines, out = body.replace("\\\n", " ").splitlines(), []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith(NOT_HERE):
            out.append(line)
    return out


SH = [cmd for lang, body in BLOCKS if lang == "sh" for cmd in _commands(body)]
PY = [body for lang, body in BLOCKS if lang == "python"]


@pytest.mark.parametrize("command", SH, ids=[c[:40] for c in SH])
def test_every_shell_command_runs(workspace, port, command):
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    cwd = workspace
    if command.startswith("node "):
        node_dir = ROOT / "examples" / "node"
        if not (node_dir / "node_modules").is_dir() or not shutil.which("node"):
            pytest.skip("the Node example is not installed (make setup-embed)")
        cwd = node_dir
        command = command.replace("../../models/example", str(workspace / "models" / "example"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-e", "-c", command], cwd=cwd, env=env, capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    if command.startswith("curl"):
        assert b'"error"' not in res.stdout and res.stdout.startswith(b"{"), res.stdout


@pytest.mark.parametrize("snippet", PY, ids=[s.splitlines()[0][:40] for s in PY])
def test_every_python_snippet_runs(workspace, port, snippet):
    snippet = snippet.replace('"127.0.0.1:8000"', f'"127.0.0.1:{port}"')
    if "tritonclient" in snippet:
        pytest.importorskip("tritonclient.http")
    res = subprocess.run([sys.executable, "-c", snippet], cwd=workspace, capture_output=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr.decode()


@pytest.mark.parametrize("script", ["linreg-train", "linreg-export", "linreg-synth",
                                    "linreg-predict", "linreg-serve", "linreg-summary"])
def test_help_and_readme_agree(script):
    from serve.cli import predict_main, serve_main
    from trainer.cli import export_main, summary_main, synth_main, train_main

    command = {"linreg-train": train_main, "linreg-export": export_main,
               "linreg-synth": synth_main, "linreg-predict": predict_main,
               "linreg-serve": serve_main, "linreg-summary": summary_main}[script]
    start = time.perf_counter()
    res = subprocess.run([str(BIN / script), "--help"], capture_output=True, timeout=60)
    assert res.returncode == 0 and time.perf_counter() - start < 30
    help_text = res.stdout.decode()
    params = [p for p in command.params if isinstance(p, click.Option)
              and p.name not in ("help", "version")]
    options = [o for p in params for o in p.opts]
    for p in params:
        assert any(o in help_text for o in p.opts), p.opts
        assert any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", README) for o in p.opts), \
            f"{script} {'/'.join(p.opts)} is not in the README"
    synopsis = next((body for lang, body in BLOCKS if lang == "text"
                     and body.startswith(script + " ")), "")
    for shown in re.findall(r"\[(--[a-z0-9-]+)", synopsis):
        assert shown in options, f"the README shows {script} {shown}, which does not exist"
