"""serve.core.tables: the runtime's file reading, with errors that name file, row and column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.core.errors import DataError
from serve.core.formats import file_format
from serve.core.numbers import all_numbers
from serve.core.tables import to_matrix


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


def test_file_format_by_extension():
    assert file_format("A.PARQUET") == "parquet"
    with pytest.raises(DataError, match="x.json: unknown file type '.json'"):
        file_format("x.json", allowed=("csv",))


NUMBERISH = st.text(alphabet="0123456789+-.eE _xXabcdfinINFtyl,\t", max_size=12)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(st.lists(NUMBERISH, min_size=1, max_size=4))
def test_a_header_is_numbers_exactly_when_arrows_float_parser_takes_every_cell(cells):
    """all_numbers answers a header of names with Python's float alone: that is sound only if
    every text Arrow's float parser takes, Python's float takes too."""
    arrow = pc.utf8_trim_whitespace(pa.array(cells, pa.string()))
    parses = []
    for cell in arrow.to_pylist():
        try:
            pc.cast(pa.array([cell], pa.string()), pa.float64())
            parses.append(cell != "")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parses.append(False)
    assert all_numbers(cells) == all(parses)
    for cell, ok in zip(cells, parses):
        if ok:
            float(cell)  # what Arrow takes, Python takes
