"""The streamed scan's linear algebra on its own (no files): the running R factor and what is
read from it, against numpy on the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.tsqr import Tsqr, moments_from_r, without_constant


def _factor(X: np.ndarray, Y: np.ndarray, w: np.ndarray | None = None, chunk: int = 37):
    tsqr = Tsqr(X.shape[1] + 1 + Y.shape[1])
    for at in range(0, len(X), chunk):
        root = None if w is None else np.sqrt(w[at:at + chunk])
        tsqr.add(X[at:at + chunk], Y[at:at + chunk], root)
    return tsqr


@pytest.mark.parametrize("weighted", [False, True])
def test_moments_from_r_keep_the_digits_of_large_offsets(weighted):
    """Columns around 1e6 with unit spread: Σx² − n·x̄² would lose 12 digits; R does not."""
    rng = np.random.default_rng(0)
    X = 1e6 + rng.normal(size=(1000, 3))
    Y = rng.normal(size=(1000, 2)) * 5 - 3e5
    w = rng.uniform(0, 2, 1000) if weighted else None
    tsqr = _factor(X, Y, w)
    assert tsqr.rows == 1000
    x, y = moments_from_r(tsqr.R, 3)
    weights = np.ones(1000) if w is None else w
    for got, data in ((x, X), (y, Y)):
        mean = weights @ data / weights.sum()
        np.testing.assert_allclose(got.n, weights.sum(), rtol=1e-12)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-13)
        np.testing.assert_allclose(got.m2, weights @ (data - mean) ** 2, rtol=1e-9)


def test_the_running_factor_is_numpys_and_drops_its_constant():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(500, 4)), rng.normal(size=(500, 1))
    R = _factor(X, Y).R
    Z = np.hstack([X, np.ones((500, 1)), Y])
    np.testing.assert_allclose(R.T @ R, Z.T @ Z, rtol=1e-10, atol=1e-9)
    R0 = without_constant(R, 4)
    np.testing.assert_allclose(R0.T @ R0, np.hstack([X, Y]).T @ np.hstack([X, Y]), rtol=1e-10,
                               atol=1e-9)


def test_no_rows_and_zero_weights_have_empty_moments():
    empty = Tsqr(5)
    empty.add(np.empty((0, 3)), np.empty((0, 1)))
    assert empty.R.shape == (0, 5) and moments_from_r(empty.R, 3)[0].n == 0
    zero = _factor(np.ones((10, 3)), np.ones((10, 1)), np.zeros(10))
    assert moments_from_r(zero.R, 3)[1].n == 0


# ------------------------------------------------------------------ encoding a chunk in Arrow

def _specs(**unknown):
    from serve.core.columns import ColumnSpec

    return [ColumnSpec("x", "numeric", fill=0.5, indicator=True),
            ColumnSpec("city", "categorical", levels=("", "Lyon", "Paris"), reference="Lyon",
                       **unknown),
            ColumnSpec("n", "categorical", levels=("1", "2"), reference="1")]


@pytest.mark.parametrize("kind", ["string", "large_string", "dictionary"])
def test_table_design_equals_the_in_memory_design_matrix(kind):
    """The Arrow path (text looked up by Arrow's hash table) writes what raw_columns +
    design_matrix write: blanks as the blank level, an unseen level as the reference."""
    import pyarrow as pa

    from trainer.encode import design_matrix, raw_columns, table_design

    city = pa.array(["Paris", None, "Lyon", "Nice", "Paris"],
                    pa.large_string() if kind == "large_string" else pa.string())
    if kind == "dictionary":
        city = city.dictionary_encode()
    table = pa.table({"x": [1.0, None, 3.0, 4.0, None], "city": city, "n": [1, 2, 2, 1, 1]})
    specs = _specs(unknown="reference")
    raw = raw_columns(table, ["x", "city", "n"], categorical=["city", "n"], source="d")
    want = design_matrix(raw, specs, source="d")
    got = np.full(want.shape, np.nan)
    table_design(table, specs, source="d", rows=np.arange(5), out=got)
    np.testing.assert_array_equal(got, want)
    assert got[3].tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]  # Nice: the reference, Lyon's row


def test_table_design_names_an_unseen_level_as_in_memory():
    import pyarrow as pa

    from serve.core.errors import DataError
    from trainer.encode import table_design

    table = pa.table({"x": [1.0, 2.0], "city": ["Paris", "Nice"], "n": [1, 2]})
    with pytest.raises(DataError) as e:
        table_design(table, _specs(), source="d.csv", rows=np.array([10, 11]),
                     out=np.empty((2, 5)))
    assert str(e.value) == ("d.csv: row 12 (a validation row), column 'city': level 'Nice' is "
                            "not in the training rows; pass --unknown reference to predict it "
                            "as the reference level, or train without --val-fraction")
