"""Training data from CSV, Parquet, NPY and NPZ: same numbers, names and defaults."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve.core.errors import DataError
from trainer.data import load_training_data, split_rows
from trainer.files import read_table


@pytest.fixture
def frame(rng):
    return rng.normal(size=(20, 4))


def test_every_format_gives_the_same_matrix(tmp_path, frame):
    names = ["a", "b", "c", "y"]
    np.savetxt(tmp_path / "d.csv", frame, delimiter=",", header=",".join(names), comments="",
               fmt="%.17g")
    pq.write_table(pa.table({n: frame[:, i] for i, n in enumerate(names)}), tmp_path / "d.parquet")
    np.save(tmp_path / "d.npy", frame)
    np.savez(tmp_path / "d.npz", X=frame[:, :3], y=frame[:, 3])
    for suffix in ("csv", "parquet", "npy", "npz"):
        d = load_training_data(tmp_path / f"d.{suffix}")
        np.testing.assert_array_equal(d.X, frame[:, :3])
        np.testing.assert_array_equal(d.Y, frame[:, 3:])
    assert load_training_data(tmp_path / "d.csv").feature_names == ["a", "b", "c"]
    assert load_training_data(tmp_path / "d.npy").target_names == ["c3"]
    assert load_training_data(tmp_path / "d.npz").feature_names == ["x0", "x1", "x2"]


def test_targets_and_features_are_picked_by_name(tmp_path, frame):
    pq.write_table(pa.table({n: frame[:, i] for i, n in enumerate("pqrs")}), tmp_path / "d.pq")
    d = load_training_data(tmp_path / "d.pq", targets=["p", "r"], features=["s", "q"])
    np.testing.assert_array_equal(d.X, frame[:, [3, 1]])
    np.testing.assert_array_equal(d.Y, frame[:, [0, 2]])
    with pytest.raises(DataError, match="column 'p' is both a feature and a target"):
        load_training_data(tmp_path / "d.pq", targets=["p"], features=["p", "q"])


def test_integer_and_text_columns(tmp_path):
    (tmp_path / "d.csv").write_text("id,x,y\nA,1,2\nB,2,4\nC,3,7\n")
    d = load_training_data(tmp_path / "d.csv", features=["x"])
    assert d.X.dtype == np.float64 and d.X.ravel().tolist() == [1, 2, 3]
    d = load_training_data(tmp_path / "d.csv")  # text: raw columns, encoded later
    assert d.X is None and d.raw["id"].tolist() == ["A", "B", "C"]
    assert d.raw["x"].tolist() == [1.0, 2.0, 3.0]


def test_split_is_seeded_and_disjoint():
    tr, va = split_rows(100, 0.2, seed=3)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    np.testing.assert_array_equal(va, split_rows(100, 0.2, seed=3)[1])
    assert not np.array_equal(va, split_rows(100, 0.2, seed=4)[1])


def test_read_table_errors(tmp_path):
    with pytest.raises(DataError, match="x.json: unknown file type '.json'"):
        read_table(tmp_path / "x.json")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(DataError, match="column 'a' appears twice; column names must be unique"):
        read_table(tmp_path / "dup.csv")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"expected a 2-D array \(rows x columns\), got shape"):
        read_table(tmp_path / "cube.npy")
