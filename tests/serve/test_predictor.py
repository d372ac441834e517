"""serve.Predictor: loading, every accepted input form, and errors that say what and where."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from serve import ModelError, PredictionInputError, Predictor
from tests.serve.conftest import MODELS, expected


def test_predictions_match_the_saved_weights(model_dir, rng):
    p = Predictor.load(model_dir)
    X = rng.normal(0, 5, size=(100, p.n_features))
    got = p.predict(X)
    assert got.shape == (100, p.n_targets)
    assert got.dtype == p.dtype
    rtol = 1e-12 if p.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, expected(model_dir, X), rtol=rtol, atol=rtol * 100)


def test_bare_onnxruntime_gives_the_same_answer(model_dir, rng):
    p = Predictor.load(model_dir / "model.onnx")
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    X = rng.normal(size=(7, p.n_features)).astype(p.dtype)
    np.testing.assert_array_equal(p.predict(X), sess.run(["prediction"], {"features": X})[0])


def test_names_dtype_and_metadata():
    p = Predictor.load(MODELS / "multi")
    assert p.feature_names == ["x0", "x1", "x2", "x3"]
    assert p.target_names == ["y0", "y1"]
    assert p.metadata["dtype"] == "float32" and p.metadata["n_features"] == "4"
    assert Predictor.load(MODELS / "f64").dtype == np.float64


def test_every_input_form_gives_the_same_rows(multi, rng):
    p = Predictor.load(multi)
    X = rng.normal(size=(3, 4))
    ref = p.predict(X)
    cols = {n: X[:, i] for i, n in enumerate(p.feature_names)}
    np.testing.assert_array_equal(p.predict(X.tolist()), ref)
    np.testing.assert_array_equal(p.predict(X.astype(np.float32)), ref)
    np.testing.assert_array_equal(p.predict({**cols, "extra": [1, 2, 3]}), ref)
    np.testing.assert_array_equal(p.predict([dict(zip(p.feature_names, r)) for r in X]), ref)
    np.testing.assert_array_equal(p.predict(X[0]), ref[:1])  # 1-D: one row
    np.testing.assert_array_equal(p.predict(np.asfortranarray(X)), ref)
    ints = np.arange(8).reshape(2, 4)
    np.testing.assert_allclose(p.predict(ints), expected(multi, ints), rtol=1e-5)


def test_pandas_columns_are_picked_by_name(multi, rng):
    pd = pytest.importorskip("pandas")
    p = Predictor.load(multi)
    X = rng.normal(size=(5, 4))
    df = pd.DataFrame(X, columns=p.feature_names)[["x3", "x1", "x0", "x2"]].assign(id=range(5))
    np.testing.assert_array_equal(p.predict(df), p.predict(X))
    with pytest.raises(PredictionInputError, match="missing feature column\\(s\\) x2; the model "
                       "needs x0, x1, x2, x3"):
        p.predict(df.drop(columns="x2"))


@pytest.mark.parametrize(("rows", "message"), [
    ([[1, 2, 3]], "expected 4 features per row (x0, x1, x2, x3), got 3"),
    ([[1, 2, 3, 4], [1, 2]], "rows have different lengths; each row needs 4 features"),
    ([[1, 2, "abc", 4]], "row 1, column 'x2': 'abc' is not a number"),
    ([[1, 2, 3, 4], [1, float("nan"), 3, 4]], "row 2, column 'x1': NaN is not allowed (clean or "
     "drop the row)"),
    (np.array([[1, 2, 3, -np.inf]]), "row 1, column 'x3': -inf is not allowed (or a value "
     "beyond float32's ±3.4e38; clean or drop the row)"),
    ([[1, 2, 3, 1e39]], "row 1, column 'x3': inf is not allowed (or a value beyond float32's "
     "±3.4e38; clean or drop the row)"),
    ({"x0": [1], "x1": [2]}, "missing feature column(s) x2, x3; the model needs x0, x1, x2, x3"),
    ({"x0": [1], "x1": [2], "x2": [3], "X3": [4]},
     "missing feature column(s) x3; the model needs x0, x1, x2, x3 (unknown: X3)"),
    ([{"x0": 1, "x1": 2, "x2": 3}], "row 1: missing feature(s) x3"),
    (np.zeros((2, 2, 4)), "expected rows of 4 features, got an array of shape (2, 2, 4)"),
])
def test_bad_rows_raise_a_typed_error_that_says_where(multi, rows, message):
    with pytest.raises(PredictionInputError) as e:
        Predictor.load(multi).predict(rows)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError)


def test_one_row_and_a_large_batch(multi, rng):
    p = Predictor.load(multi)
    big = rng.normal(size=(300_000, 4)).astype(np.float32)
    got = p.predict(big)  # the multi-threaded session
    np.testing.assert_array_equal(got[:5], p.predict(big[:5]))  # the one-thread session
    pinned = Predictor.load(multi, threads=2)
    np.testing.assert_array_equal(pinned.predict(big[:1000]), got[:1000])


@pytest.mark.parametrize(("name", "content", "message"), [
    ("nope", None, "no such model file or folder"),
    ("", None, "no model.onnx; export it first (linreg-export"),
    ("bad.onnx", b"not onnx", "not a readable ONNX model ("),
    ("m.txt", b"x", "expected a model folder, a .onnx or a .torchscript.pt file"),
])
def test_bad_model_paths(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        Predictor.load(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_torchscript_loads_lazily(multi, rng):
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="TorchScript needs torch, which is not installed; "
                           "load the model's .onnx instead"):
            Predictor.load(multi / "model.torchscript.pt")
        return
    ts = Predictor.load(multi / "model.torchscript.pt")
    X = rng.normal(size=(4, 4)).astype(np.float32)
    assert ts.feature_names == ["x0", "x1", "x2", "x3"]
    np.testing.assert_allclose(ts.predict(X), Predictor.load(multi).predict(X), rtol=1e-6)
