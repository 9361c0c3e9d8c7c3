"""Arrow arrays made from their buffers (gymray.engine.arrays) are the arrays
``pa.array`` makes of the same values, without importing pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from gymray.engine.arrays import (
    byte_lengths,
    column,
    from_numpy,
    packed,
    to_numpy,
    unpacked,
    valid,
)

CASES = [
    ([b'{"a": 1}', None, b"", b"\xc3\xa9"], pa.large_binary()),
    ([b"\xff\x00", b"a"], pa.binary()),
    (["used", None, "filtered"], pa.string()),
    (["é", "漢字", None, "a"], pa.string()),  # not ASCII: encoded one by one
    ([None, "x"], pa.string()),
    ([1, None, -(2**63), 2**63 - 1], pa.int64()),
    ([0, 7, -3], pa.int32()),
    ([1.5, None, 2, float("nan"), float("inf")], pa.float64()),  # NaN stays a value
    ([None, None], pa.float64()),
    ([], pa.string()),
    ([], pa.int64()),
]


@pytest.mark.parametrize("values,type_", CASES)
def test_a_column_is_the_array_pyarrow_makes(values, type_):
    made = column(values, type_)
    made.validate(full=True)
    expected = pa.array(values, type_)
    assert made.type == expected.type and made.null_count == expected.null_count
    assert repr(made.to_pylist()) == repr(expected.to_pylist())  # (NaN != NaN in equals)


def test_text_columns_take_bytes_and_str_alike():
    made = column([b"caf\xc3\xa9", "café", None], pa.string())
    assert made.to_pylist() == ["café", "café", None]
    # numpy's text is a str whose buffer is 4 bytes a character: written as UTF-8 all the same
    assert column([np.str_("ab"), "é"], pa.string()).to_pylist() == ["ab", "é"]


@pytest.mark.parametrize(
    "values,type_,error",
    [
        (["a"], pa.int64(), TypeError),
        ([True], pa.int64(), TypeError),
        ([2**31], pa.int32(), OverflowError),  # numpy would wrap it
        ([2**63], pa.int64(), OverflowError),  # numpy makes it a uint64, and would wrap it
        ([None, 2**64 - 1], pa.int64(), TypeError),  # numpy makes 0 and it float64s
        ([1], pa.string(), TypeError),
        ([{"a": 1}], pa.float64(), TypeError),
        ([[1, 2], [3, 4]], pa.float64(), TypeError),  # numpy would make it 2-D
    ],
)
def test_values_of_the_wrong_kind_fail_as_pyarrow_fails_them(values, type_, error):
    with pytest.raises((pa.ArrowException, TypeError, OverflowError)):
        pa.array(values, type_)
    with pytest.raises(error):
        column(values, type_)


def test_a_float_in_an_integer_column_is_an_error_not_cut():
    assert pa.array([1.5], pa.int64()).to_pylist() == [1]  # pyarrow's
    with pytest.raises(TypeError):
        column([1.5], pa.int64())
    assert column([True, 2], pa.float64()).to_pylist() == [1.0, 2.0]  # as pyarrow's


def test_numpy_arrays_indices_and_masks():
    assert from_numpy(np.arange(3)).equals(pa.array([0, 1, 2], pa.int64()))
    assert from_numpy([4, 1]).equals(pa.array([4, 1], pa.int64()))
    assert from_numpy(np.full(2, 9), pa.int32()).equals(pa.array([9, 9], pa.int32()))
    mask = np.array([True, False, True, True, False, False, True, False, True])
    assert from_numpy(mask, pa.bool_()).equals(pa.array(mask))
    table = pa.table({"a": list(range(9))})
    assert table.filter(from_numpy(mask, pa.bool_()))["a"].to_pylist() == [0, 2, 3, 6, 8]


def test_to_numpy_reads_what_pyarrow_gives():
    ints = pa.array(list(range(-5, 20)), pa.int64()).slice(3, 11)  # an offset
    assert to_numpy(ints).tolist() == ints.to_numpy().tolist() == list(range(-2, 9))
    bits = pa.array([i % 3 == 0 for i in range(30)]).slice(5, 17)  # not on a byte
    assert to_numpy(bits).dtype == np.bool_
    assert to_numpy(bits).tolist() == bits.to_numpy(zero_copy_only=False).tolist()
    floats = pa.array([1.5, None, -2.0, None], pa.float64()).slice(1)
    assert repr(to_numpy(floats).tolist()) == repr([float("nan"), -2.0, float("nan")])
    chunked = pa.chunked_array([pa.array([1, 2], pa.int32()), pa.array([3], pa.int32())])
    assert to_numpy(chunked).tolist() == [1, 2, 3] and to_numpy(chunked).dtype == np.int32
    assert to_numpy(pa.array([], pa.int64())).tolist() == []
    with pytest.raises(ValueError, match="1 nulls in a int64 column"):
        to_numpy(pa.array([1, None], pa.int64()))


@pytest.mark.parametrize("type_", [pa.string(), pa.binary(), pa.large_binary()])
def test_byte_lengths_and_validity_are_pyarrow_computes(type_):
    import pyarrow.compute as pc  # (the control; gymray itself does without it)

    values = ["", "ab", None, "\u00e9t\u00e9", None, "x" * 300, "c"]
    if type_ != pa.string():
        values = [v.encode() if v is not None else None for v in values]
    whole = pa.array(values, type_)
    cases = [whole, whole.slice(2, 4), pa.chunked_array([whole.slice(0, 3), whole.slice(5)]),
             pa.chunked_array([], type_), pa.array(["q", "r"], type_), pa.nulls(3, type_)]  # fmt: skip
    for arr in cases:
        want = pc.fill_null(pc.binary_length(arr), 0).to_pylist()
        assert byte_lengths(arr).tolist() == want and byte_lengths(arr).dtype == np.int64
        assert valid(arr).tolist() == pc.is_valid(arr).to_pylist()
    assert valid(pa.nulls(2)).tolist() == [False, False]  # a null-typed column
    assert valid(pa.array([1, None, 3]).slice(1)).tolist() == [False, True]


def test_a_packed_table_comes_back_whole_and_compact():
    table = pa.table({"k": pa.array(range(1000), pa.int64()),
                      "raw": pa.array([b"x" * 100] * 1000, pa.large_binary())})  # fmt: skip
    piece = table.slice(10, 5)  # a slice: only its rows travel, not the whole buffers
    buf = packed(piece)
    assert unpacked(buf).equals(piece) and unpacked(packed(table)).equals(table)
    assert buf.size < 5 * 100 + 2048


def test_none_of_it_imports_pandas_or_pyarrow_compute():
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from gymray.engine.arrays import column, from_numpy, packed, to_numpy, unpacked\n"
        "column([b'a', None], pa.large_binary()); column(['\u00e9', None], pa.string())\n"
        "column([1, None], pa.int64()); column([1], pa.int32()); column([0.5], pa.float64())\n"
        "from_numpy(np.arange(3)); from_numpy([True], pa.bool_())\n"
        "t = unpacked(packed(pa.table([column([b'a'], pa.binary())], names=['b'])))\n"
        "to_numpy(column([1.5, None], pa.float64())); to_numpy(from_numpy([True], pa.bool_()))\n"
        "from gymray.engine.arrays import byte_lengths, valid\n"
        "byte_lengths(column([b'ab', None], pa.binary())); valid(column([1, None], pa.int64()))\n"
        "print('pandas' in sys.modules, 'pyarrow.compute' in sys.modules)\n"
        "pa.array([1])\n"  # the control: pyarrow's own imports it here
        "print('pandas' in sys.modules, 'pyarrow.compute' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "False", "True", "True"]
