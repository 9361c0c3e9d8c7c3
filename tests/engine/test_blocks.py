"""Per-block helpers of gymray.engine.blocks."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from gymray.engine.blocks import opener_counts


def by_line(values: list[bytes | None]) -> list[int]:
    return [0 if v is None else v.count(b"[") + v.count(b"{") for v in values]


@pytest.mark.parametrize("kind", [pa.large_binary(), pa.binary()])
def test_opener_counts_match_counting_each_line(kind):
    rng = random.Random(7)
    alphabet = b'[]{}"x\\{[ '  # '{' is '[' | 32: other bytes that are must not count
    values: list[bytes | None] = [
        bytes(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 300, 9000])))
        for _ in range(200)
    ]
    values[3] = None  # a line with an error has no bytes
    values[4] = b";[{" + bytes(range(256))  # every byte once: ';' | 32 == '{' too
    whole = pa.array(values, kind)
    sliced = whole.slice(37, 100)  # an offset into shared buffers
    chunked = pa.chunked_array([whole.slice(0, 50), pa.array([], kind), whole.slice(50)])

    assert opener_counts(whole) == by_line(values)
    assert opener_counts(sliced) == by_line(values[37:137])
    assert opener_counts(chunked) == by_line(values)
    assert opener_counts(pa.array([b"", b""], kind)) == [0, 0]
    assert opener_counts(pa.chunked_array([], kind)) == []
