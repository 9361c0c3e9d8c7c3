"""Reading rollout files: lines as Arrow blocks, byte ranges, lines read back by offset.

Rollout files are read as bytes and split on ``b"\\n"`` only (``read_text`` cuts
records at U+2028 and ``read_json`` null-pads heterogeneous structs). Every
block carries ``(file_id, line, offset)`` so every outcome can name its input
line and a line can be read again by itself.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from gymray.errors import ConfigError
from gymray.storage import InputFile, filesystem, is_remote, open_input
from gymray.storage.failures import writing

SAMPLE_LINES = 50
SAMPLE_BYTES = 4 << 20


LINES_SCHEMA = pa.schema(
    [
        ("file_id", pa.int32()),
        ("line", pa.int64()),
        ("offset", pa.int64()),
        ("raw", pa.large_binary()),
    ]
)


# --------------------------------------------------------------------------- read
def read_lines(
    f: InputFile,
    file_id: int,
    block_bytes: int,
    storage: Any = None,
    span: tuple[int, int, int] | None = None,
) -> Iterator[pa.Table]:
    """Yield blocks of ``(file_id, line, offset, raw)`` for one file, ~``block_bytes`` each.

    Lines are cut on ``b"\\n"`` only. The lines wholly inside a chunk are an Arrow
    array over the chunk's own buffer (no copy, no Python list of lines); only the
    line that straddles two chunks is copied. Values keep their trailing newline,
    which JSON parsing ignores. ``offset`` is where the line starts in the
    (decompressed) file, so that a line can be read again by itself.
    """
    line_no = 0
    carry: list[bytes] = []
    carry_at = pos = 0
    left = None
    if span is None:
        stream = open_input(f, storage)
    else:  # (start, end, lines before start): a byte range that begins on a line
        start, end, line_no = span
        stream = open_range(f, start, storage)
        left = end - start
        carry_at = pos = start
    with stream:
        while True:
            chunk = stream.read(block_bytes if left is None else min(block_bytes, left))
            if left is not None:
                left -= len(chunk)
            if not chunk:
                break
            at, pos = pos, pos + len(chunk)
            first = chunk.find(b"\n")
            if first < 0:
                if not carry:
                    carry_at = at
                carry.append(chunk)
                continue
            ends = [first + 1]
            i = chunk.find(b"\n", first + 1)
            while i >= 0:  # lines are KBs long: find() beats a vectorized scan here
                ends.append(i + 1)
                i = chunk.find(b"\n", i + 1)
            head = b"".join(carry) + chunk[: first + 1]
            offsets = np.array(ends, dtype=np.int64)
            starts = np.concatenate([[carry_at if carry else at], at + offsets[:-1]])
            carry = [chunk[ends[-1] :]] if ends[-1] < len(chunk) else []
            carry_at = at + ends[-1]
            rest = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), len(ends) - 1,
                [None, pa.py_buffer(offsets), pa.py_buffer(chunk)],
            )  # fmt: skip
            yield _lines_table(
                file_id, line_no, starts, [pa.array([head], pa.large_binary()), rest]
            )
            line_no += len(ends)
    last = b"".join(carry)
    if last:  # a last line without its newline is still a line
        yield _lines_table(
            file_id, line_no, np.array([carry_at], np.int64), [pa.array([last], pa.large_binary())]
        )


def _lines_table(file_id: int, first: int, starts: np.ndarray, raw: list[pa.Array]) -> pa.Table:
    n = sum(len(a) for a in raw)
    return pa.table(
        [
            pa.array(np.full(n, file_id, dtype=np.int32)),
            pa.array(np.arange(first + 1, first + n + 1, dtype=np.int64)),
            pa.array(starts),
            pa.chunked_array(raw, pa.large_binary()),
        ],
        schema=LINES_SCHEMA,
    )


def open_range(f: InputFile, start: int, storage: Any = None):
    fs, path = filesystem(f.uri, storage)
    stream = fs.open_input_file(path)
    stream.seek(start)
    return stream


def plan_units(
    inputs: list[InputFile], split_bytes: int, storage: Any = None
) -> list[tuple[int, tuple | None]]:
    """Read units: ``(file_id, None)`` for a whole file, or ``(file_id, (start, end,
    lines before start))`` for a range of a large local file, so that one big file
    is parsed on every core. Range starts are moved to line starts and the lines
    before them counted in one pass here, so every line keeps its true number."""
    units: list[tuple[int, tuple | None]] = []
    for fid, f in enumerate(inputs):
        if f.size <= split_bytes or is_remote(f.uri) or f.path.endswith(".gz"):
            units.append((fid, None))
            continue
        starts, lines_before = [0], [0]
        newlines = 0
        with open_range(f, 0, storage) as stream:
            pos = 0
            pending = False  # a range boundary passed, waiting for the next line start
            while True:
                chunk = stream.read(split_bytes)
                if not chunk:
                    break
                if pending:
                    i = chunk.find(b"\n")
                    if i >= 0:
                        starts.append(pos + i + 1)
                        lines_before.append(newlines + 1)
                        pending = False
                newlines += chunk.count(b"\n")
                pos += len(chunk)
                if pos < f.size:
                    if chunk.endswith(b"\n"):
                        starts.append(pos)
                        lines_before.append(newlines)
                    else:
                        pending = True
        bounds = starts + [f.size]
        units += [
            (fid, (bounds[k], bounds[k + 1], lines_before[k]))
            for k in range(len(starts))
            if bounds[k] < bounds[k + 1]
        ]
    return units


class LineReader:
    """Reads single lines back by position, one open file per input."""

    def __init__(self, inputs: list[InputFile], storage: Any):
        self.inputs, self.storage, self.open = inputs, storage, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for f in self.open.values():
            f.close()

    def read(self, file_id: int, line: int, offset: int, length: int, crc: int) -> bytes:
        f = self.open.get(file_id)
        if f is None:
            fs, path = filesystem(self.inputs[file_id].uri, self.storage)
            f = self.open[file_id] = fs.open_input_file(path)
        raw = f.read_at(length, offset)
        if len(raw) != length or zlib.crc32(raw) != crc:
            raise RuntimeError(
                f"{self.inputs[file_id].uri} line {line} changed while gymray was reading it: "
                "inputs must not be rewritten during prepare"
            )
        return raw


def _seekable(f: InputFile) -> bool:
    return not is_remote(f.uri) and not f.path.endswith(".gz")


def shuffle_mode(settings, inputs: list[InputFile]) -> tuple[str, bool]:
    """What grouped recipes shuffle, and whether inputs are copied to
    ``ray.scratch`` first. ``keys`` (shuffle small keys, read used lines back by
    offset) needs inputs that can be read at an offset cheaply: local
    uncompressed files, or copies of the others in ``ray.scratch``. Without a
    scratch directory, ``.gz`` and object-store inputs shuffle whole rollouts
    (``ray.shuffle=keys`` forces ranged reads on uncompressed objects)."""
    mode = settings.ray.shuffle
    gz = any(f.path.endswith(".gz") for f in inputs)
    if mode == "keys" and gz and not settings.ray.scratch:
        raise ConfigError(
            "ray.shuffle=keys reads lines back by offset, which .gz inputs do not allow: "
            "set ray.scratch=<a directory every Ray node can read> for uncompressed copies, "
            "or use ray.shuffle=rollouts"
        )
    seekable = all(_seekable(f) for f in inputs)
    if mode == "auto":
        mode = "keys" if settings.ray.scratch or seekable else "rollouts"
    return mode, mode == "keys" and not seekable and bool(settings.ray.scratch)


class ScratchCopies:
    """Uncompressed copies of ``.gz`` and object-store inputs in ``scratch`` (a
    directory every Ray node can read), made in parallel by Ray tasks, so that
    lines can be read back by offset (and large files read as ranges). Local
    uncompressed inputs are used in place. Removed when prepare ends."""

    def __init__(self, scratch: str, inputs: list[InputFile], storage: Any):
        if is_remote(scratch):
            raise ConfigError(f"ray.scratch={scratch} must be a local or shared (NFS/Lustre) path")
        self.dir = os.path.join(
            os.path.abspath(os.path.expanduser(scratch)), f"gymray-{uuid.uuid4().hex[:12]}"
        )
        os.makedirs(self.dir)
        copy = ray.remote(num_cpus=1)(_copy_uncompressed)
        todo = {
            i: os.path.join(self.dir, f"{i:05d}-{f.name.removesuffix('.gz')}")
            for i, f in enumerate(inputs)
            if not _seekable(f)
        }
        try:
            sizes = dict(
                zip(
                    todo,
                    ray.get([copy.remote(inputs[i], dest, storage) for i, dest in todo.items()]),
                    strict=True,
                )
            )
        except BaseException:
            self.remove()
            raise
        self.inputs = [
            InputFile(uri=todo[i], path=todo[i], size=sizes[i], mtime_ns=0) if i in todo else f
            for i, f in enumerate(inputs)
        ]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _copy_uncompressed(f: InputFile, dest: str, storage: Any) -> int:
    scratch, name = os.path.split(dest)
    with writing(scratch, name, fix="set ray.scratch to a directory with room for the copies"):
        with open_input(f, storage) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 16 << 20)
            return out.tell()


def partitions_for(inputs: list[InputFile], settings) -> int:
    """Hash partitions for grouping: ~64 MiB of input each. A function of the
    input only (never of the cluster), so outputs do not depend on it."""
    if settings.ray.partitions:
        return settings.ray.partitions
    total = sum(f.size for f in inputs)
    return max(1, min(1024, -(-total // (64 << 20))))


def sample_lines(inputs: list[InputFile], storage: Any = None) -> Iterator[bytes]:
    """The first lines of each input file, in order: what a recipe looks at to
    choose its format before the run."""
    for f in inputs:
        with open_input(f, storage) as stream:
            head = stream.read(SAMPLE_BYTES)
        yield from head.split(b"\n")[:SAMPLE_LINES]


def read_whole(files: list[InputFile], storage: Any = None) -> list[tuple[str, bytes]]:
    """``(uri, bytes)`` of small files (task files), read on the driver."""
    out = []
    for f in files:
        with open_input(f, storage) as stream:
            out.append((f.uri, stream.read()))
    return out
