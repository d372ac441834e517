"""serve.tables: the runtime's file reading, with errors that name file, row and column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from serve.errors import DataError
from serve.tables import file_format, read_table, to_matrix


def test_to_matrix_orders_columns_by_name_and_converts():
    t = pa.table({"b": [1, 2], "a": [0.5, 1.5], "id": ["p", "q"]})
    m = to_matrix(t, ["a", "b"], source="mem", dtype=np.float32)
    assert m.dtype == np.float32 and m.flags.c_contiguous
    np.testing.assert_array_equal(m, [[0.5, 1], [1.5, 2]])


@pytest.mark.parametrize(("column", "message"), [
    (pa.array([1.0, None]), "mem: row 12, column 'x': missing value"),
    (pa.array([1.0, float("nan")]), "mem: row 12, column 'x': NaN is not allowed"),
    (pa.array(["1", "two"]), "mem: row 12, column 'x': 'two' is not a number"),
    (pa.array([[1.0], [2.0]]), "mem: column 'x' has type list<item: double>, not numbers"),
])
def test_to_matrix_names_the_row_with_offset(column, message):
    with pytest.raises(DataError) as e:
        to_matrix(pa.table({"x": column}), ["x"], source="mem", row_offset=10)
    assert str(e.value).startswith(message)


def test_read_table_errors(tmp_path):
    with pytest.raises(DataError, match="x.json: unknown file type '.json'"):
        read_table(tmp_path / "x.json")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(DataError, match="column 'a' appears twice; column names must be unique"):
        read_table(tmp_path / "dup.csv")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"expected a 2-D array \(rows x columns\), got shape"):
        read_table(tmp_path / "cube.npy")
    assert file_format("A.PARQUET") == "parquet"
