"""The runtime never loads torch or the trainer: checked in a fresh interpreter and in the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.serve.conftest import MODELS

SERVE = Path(__file__).resolve().parent.parent.parent / "serve"


def test_import_load_predict_never_imports_torch():
    code = f"""
import sys
import serve, serve.batch.files, serve.cli
p = serve.Predictor.load({str(MODELS / 'multi')!r})
p.predict([[1.0, 2.0, 3.0, 4.0]])
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer', 'onnx'))
print(bad)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_serve_sources_import_torch_only_lazily():
    for path in SERVE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: a lazy import inside a function is fine
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in ("torch", "trainer"), f"{path.name}: {name}"


def test_linreg_predict_of_a_csv_imports_only_what_a_csv_needs(tmp_path):
    """pandas (which pyarrow would import to look for pandas objects), Parquet and Arrow's
    compute functions cost half of a small run and are not needed to predict a CSV."""
    data = tmp_path / "in.csv"
    data.write_text("x0,x1,x2,x3\n1,2,3,4\n5,6,7,8\n")
    code = f"""
import sys
from serve.cli import predict_main
try:
    predict_main([{str(MODELS / 'multi')!r}, {str(data)!r}, "-o", {str(tmp_path / 'p.csv')!r},
                  "-q"])
except SystemExit as e:
    assert not e.code, e.code
print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas' or m in
             ('pyarrow.parquet', 'pyarrow.compute', 'torch')))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    assert (tmp_path / "p.csv").read_text().count("\n") == 3
