"""Shared test helpers: small data files on disk and subprocess runs of the installed scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def run_script(name: str, *args: str, cwd: Path | None = None, input: bytes | None = None,
               timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an installed console script (e.g. ``linreg-train``) as a user would."""
    env = {**(env or os.environ), "PYTHONWARNINGS": "default"}
    return subprocess.run([str(BIN / name), *map(str, args)], cwd=cwd, input=input,
                          capture_output=True, timeout=timeout, env=env)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tutorial_csv(tmp_path: Path) -> Path:
    """The tutorial's toy set: x = 1, 2, 3 and y = 2, 4, 6."""
    return write_csv(tmp_path / "tutorial.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6]])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def spark():
    """One local Spark (a JVM) for the whole test session: the engines' tests and MLflow's
    spark_udf share it."""
    pytest.importorskip("pyspark")
    if not any(Path(p, "java").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("Spark needs a Java runtime (make java)")
    from serve.batch.engines import spark_session

    session = spark_session("local[2]", "linreg-tests")
    yield session
    session.stop()
