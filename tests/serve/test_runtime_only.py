"""In a runtime-only install (``pip install .``), the training commands say what is missing."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import run_script


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed here: the runtime-only install is .venv-runtime")
@pytest.mark.parametrize(("script", "missing"), [("linreg-train", "torch"),
                                                 ("linreg-export", "torch, onnx, onnxscript")])
@pytest.mark.parametrize("args", [["--help"], ["data.csv"]])
def test_training_commands_need_the_train_extra_in_one_line(script, missing, args):
    res = run_script(script, *args)
    assert res.returncode == 1
    assert res.stderr.decode() == (f"{script}: error: needs the train extra ({missing} not "
                                   "installed): pip install 'linreg[train]'\n")


def test_synth_works_without_torch(tmp_path):
    res = run_script("linreg-synth", tmp_path / "d.csv", "--samples", "5")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "d.csv").read_text().startswith("x,y\n")
