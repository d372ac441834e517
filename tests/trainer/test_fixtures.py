"""The committed runtime fixtures are what today's trainer and exporter produce."""

from __future__ import annotations

import numpy as np
import pytest

from serve import Predictor
from tests.fixtures.make_models import MODELS, build
from tests.serve.conftest import MODELS as FIXTURES


@pytest.mark.parametrize("name", list(MODELS))
def test_fixture_predicts_like_a_fresh_export(tmp_path, name, rng):
    fresh = Predictor.load(build(name, tmp_path))
    committed = Predictor.load(FIXTURES / name)
    assert (fresh.feature_names, fresh.target_names, fresh.dtype) == \
        (committed.feature_names, committed.target_names, committed.dtype)
    if fresh.columns is not None:  # raw columns: levels, numbers and blanks
        assert fresh.columns == committed.columns
        X = {"city": rng.choice(["Lyon", "Paris", "Rome"], 50).tolist(),
             "x1": [None if b else v for b, v in zip(rng.random(50) < 0.2, rng.normal(10, 3, 50))],
             "x2": rng.normal(0, 1, 50)}
    else:
        X = rng.normal(0, 5, size=(50, fresh.n_features))
    np.testing.assert_allclose(fresh.predict(X), committed.predict(X), rtol=1e-6)
