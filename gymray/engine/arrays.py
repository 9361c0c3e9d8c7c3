"""Arrow arrays built from their buffers, and tables shipped as Arrow IPC, for the
engine's tasks.

``pa.array`` (and what calls it: ``pa.table`` of Python lists, ``take`` or ``filter`` of
a list or a numpy array) first asks whether its input is a pandas object, and imports
pandas to know, once a process where pandas is installed: 43 MiB of private memory and
0.13 CPU-s in every Ray worker (0.7 GiB and 2 CPU-s with 16 workers), for objects
gymray never makes. The arrays here are the same, made from numpy buffers, which never
ask. Record bytes are also copied 3-4x faster than ``pa.array`` does (one join).
``to_numpy`` imports pandas as well (its C++ converter is pandas's): :func:`to_numpy`
reads the numbers from the array's buffer.

Ray ships an Arrow table a task returns through its own reducer, which imports pandas
too (``pyarrow.compute`` with a Python int): tables that go from task to task go as
:func:`packed` Arrow IPC streams instead, which Ray ships as a buffer, without a copy."""

from __future__ import annotations

import operator
from itertools import repeat

import numpy as np
import pyarrow as pa

_NUMBERS = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float64(): np.float64}
_OFFSETS = {pa.string(): np.int32, pa.binary(): np.int32, pa.large_binary(): np.int64}
_INT32 = np.iinfo(np.int32)  # an offset's
_INDEX = pa.int64()


def from_numpy(values: np.ndarray | list, type_: pa.DataType = _INDEX) -> pa.Array:
    """Numbers or booleans (a 1-D numpy array or a list) as an Arrow array of ``type_``,
    without nulls: row indices by default."""
    if type_ == pa.bool_():
        bits = np.packbits(np.asarray(values, np.bool_), bitorder="little")
        return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values, _NUMBERS[type_])
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A column of numbers or booleans as a numpy array (a null: NaN in a float column;
    other columns must have none); over the array's buffer, no copy, where it is one
    chunk without nulls."""
    if isinstance(values, pa.ChunkedArray):  # (combine_chunks copies a lone chunk too)
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    n, at = len(values), values.offset
    data = values.buffers()[1]
    if pa.types.is_boolean(values.type):
        out = _bits(data, at, n)
    else:
        dtype = np.dtype(_NUMBERS[values.type])
        out = np.frombuffer(data, dtype, n, at * dtype.itemsize) if n else np.empty(0, dtype)
    if values.null_count:
        if values.type != pa.float64():
            raise ValueError(f"{values.null_count} nulls in a {values.type} column")
        out = np.where(valid(values), out, np.nan)
    return out


def byte_lengths(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each value's length in bytes (0 for a null) of a text or binary column, from its
    offsets (``pyarrow.compute`` costs a process 40 ms to import: the driver needs none)."""
    out = [np.zeros(0, np.int64)]
    for c in _chunks(values):
        if len(c):
            dtype = np.dtype(_OFFSETS[c.type])
            offsets = np.frombuffer(c.buffers()[1], dtype, len(c) + 1, c.offset * dtype.itemsize)
            out.append(np.diff(offsets).astype(np.int64))
            if c.null_count:
                out[-1][~valid(c)] = 0
    return np.concatenate(out)


def valid(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which values are not null, as numpy booleans."""
    out = [np.zeros(0, np.bool_)]
    for c in _chunks(values):
        if not c.null_count:
            out.append(np.ones(len(c), np.bool_))
        elif c.null_count == len(c):  # (a null-typed array has no validity bitmap)
            out.append(np.zeros(len(c), np.bool_))
        else:
            out.append(_bits(c.buffers()[0], c.offset, len(c)))
    return np.concatenate(out)


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _bits(buffer: pa.Buffer | None, at: int, n: int) -> np.ndarray:
    """``n`` bits of an Arrow bitmap (data or validity) from bit ``at``, as booleans."""
    packed_bits = np.frombuffer(buffer, np.uint8) if n else np.empty(0, np.uint8)
    return np.unpackbits(packed_bits, count=at + n, bitorder="little")[at:].astype(np.bool_)


def column(values: list, type_: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of ``type_``, None as null: ``bytes`` or ``str``
    (written as UTF-8, not validated again: orjson's output and Python text are valid)
    for text and binary types, Python numbers for numeric ones."""
    n = len(values)
    nulls = values.count(None)
    if nulls == n:
        return pa.nulls(n, type_)
    valid = None
    if nulls:
        present = np.fromiter(map(operator.is_not, values, repeat(None)), np.bool_, n)
        valid = pa.py_buffer(np.packbits(present, bitorder="little"))
    if type_ in _OFFSETS:
        if nulls:
            empty = b"" if isinstance(values[int(np.argmax(present))], bytes) else ""
            values = [empty if v is None else v for v in values]
        data, lengths = _joined(values)
        offsets = np.zeros(n + 1, _OFFSETS[type_])
        np.cumsum(lengths, out=offsets[1:])
        if len(data) > _INT32.max and type_ != pa.large_binary():
            raise OverflowError(f"{len(data)} bytes are too many for one {type_} array")
        buffers = [valid, pa.py_buffer(offsets), pa.py_buffer(data)]
        return pa.Array.from_buffers(type_, n, buffers, null_count=nulls)
    if nulls:
        values = [0 if v is None else v for v in values]
    numbers = np.array(values)
    # as pyarrow: booleans are numbers only for a float column; unlike it, a float in an
    # integer column is an error, not cut to an integer
    if numbers.ndim != 1 or numbers.dtype.kind not in (
        "iu" if pa.types.is_integer(type_) else "biuf"
    ):
        raise TypeError(f"cannot make an Arrow {type_} array of numpy {numbers.dtype} values")
    if numbers.dtype.kind in "iu" and type_ != pa.float64() and n:
        limits = np.iinfo(_NUMBERS[type_])  # (numpy would wrap a value past them)
        if numbers.min() < limits.min or numbers.max() > limits.max:
            raise OverflowError(f"{numbers.min()}..{numbers.max()}: out of the {type_} range")
    numbers = numbers.astype(_NUMBERS[type_], copy=False)
    return pa.Array.from_buffers(type_, n, [valid, pa.py_buffer(numbers)], null_count=nulls)


def _joined(parts: list) -> tuple[bytes, np.ndarray]:
    """The bytes of ``parts`` (``bytes``, or ``str`` as UTF-8) end to end, and their
    lengths: one join for bytes, or for ASCII text (where each length is the text's)."""
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    try:
        data = b"".join(parts)
        if len(data) == lengths.sum():  # (numpy's text joins too, 4 bytes a character)
            return data, lengths
    except TypeError:
        pass
    try:
        text = "".join(parts)
    except TypeError:
        text = None
    if text is not None and text.isascii():
        return text.encode("ascii"), lengths
    parts = [p.encode() if isinstance(p, str) else p for p in parts]
    return b"".join(parts), np.fromiter(map(len, parts), np.int64, len(parts))


def packed(table: pa.Table) -> pa.Buffer:
    """``table`` as one Arrow IPC stream, for a task to return (see the module's doc)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def unpacked(buffer: pa.Buffer) -> pa.Table:
    """The table :func:`packed` shipped, its arrays over ``buffer`` (no copy)."""
    return pa.ipc.open_stream(buffer).read_all()
