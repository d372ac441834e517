"""What linreg-train and linreg-export load: what they need, not what a library pulls in
(issue #26). The bench (bench/startup.py) measures the seconds; this pins the cause."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_linreg_train_never_imports_pandas(tmp_path):
    """pyarrow would import pandas (0.2 s) on its first Arrow -> numpy conversion."""
    (tmp_path / "tut.csv").write_text("x,y\n1,2\n2,4\n3,6\n")
    code = f"""
import sys
from trainer.cli import train_main
try:
    train_main([{str(tmp_path / 'tut.csv')!r}, "--epochs", "3", "--out",
                {str(tmp_path / 'm')!r}, "-q"])
except SystemExit as e:
    assert not e.code, e.code
print(*sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))
"""
    assert _modules_after(code) == []
    assert (tmp_path / "m" / "model.json").is_file()


def test_ml_dtypes_is_one_that_imports_quickly():
    """onnx imports ml_dtypes; 0.7.0 takes 0.6 s to import (0.6.0: 0.07 s), a third of an
    export: pyproject keeps it below 0.7 until a fixed release."""
    version = _modules_after("import ml_dtypes; print(ml_dtypes.__version__)")[0]
    assert tuple(int(v) for v in version.split(".")[:2]) < (0, 7), version
