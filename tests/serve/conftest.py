"""Runtime tests use committed exported models, so they run where torch is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def expected(folder: Path, X: np.ndarray) -> np.ndarray:
    """X @ W.T + b from the manifest's coef_/intercept_ (the exact saved weights), in float64."""
    m = json.loads((folder / "model.json").read_text())["model"]
    return np.asarray(X, dtype=np.float64) @ np.array(m["coef_"]).T + np.array(m["intercept_"])


@pytest.fixture(params=["one", "multi", "nobias", "f64"])
def model_dir(request) -> Path:
    return MODELS / request.param


@pytest.fixture
def multi() -> Path:
    return MODELS / "multi"
