"""Reading rollout files: lines as Arrow blocks, byte ranges, lines read back by offset.

Rollout files are read as bytes and split on ``b"\\n"`` only (``read_text`` cuts
records at U+2028 and ``read_json`` null-pads heterogeneous structs). Every
block carries ``(file_id, line, offset)`` so every outcome can name its input
line and a line can be read again by itself.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from gymray.engine.arrays import column, from_numpy
from gymray.engine.stopping import get_all
from gymray.engine.write import in_worker
from gymray.errors import ConfigError, InputChanged, StorageError, UnreadableInput
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
        # set on the one row that stands for a file's unreadable rest (``raw``: the
        # partial line before the break); the engine rejects it as unreadable_file
        ("error", pa.string()),
    ]
)


# --------------------------------------------------------------------------- read
def read_lines(
    f: InputFile,
    file_id: int,
    block_bytes: int,
    storage: Any = None,
    span: tuple[int, int, int] | None = None,
    broken: str | None = None,
) -> Iterator[pa.Table]:
    """Yield blocks of ``(file_id, line, offset, raw, error)`` for one file, ~``block_bytes`` each.

    Lines are cut on ``b"\\n"`` only. The lines wholly inside a chunk are an Arrow
    array over the chunk's own buffer (no copy, no Python list of lines); only the
    line that straddles two chunks is copied. Values keep their trailing newline,
    which JSON parsing ignores. ``offset`` is where the line starts in the
    (decompressed) file, so that a line can be read again by itself.

    A file that cannot be decoded past some point (a truncated or corrupt
    ``.gz``) gives its lines before the break, then one row with ``error`` set
    where the next line would start, holding the partial line: a file's break
    is one reject, never the end of the run. ``broken`` says that this file (a
    scratch copy of a broken one) ends at such a break.
    """
    line_no = 0
    carry: list[bytes] = []
    carry_at = pos = 0
    left = None
    error = broken
    try:
        if span is None:
            stream = open_input(f, storage)
        else:  # (start, end, lines before start): a byte range that begins on a line
            start, end, line_no = span
            stream = open_range(f, start, storage)
            left = end - start
            carry_at = pos = start
    except OSError as e:  # the storage's error, not the file's: the run stops
        raise StorageError(f"cannot read input {f.uri}: {e}") from None
    with stream:
        while True:
            try:
                chunk = stream.read(block_bytes if left is None else min(block_bytes, left))
            except UnreadableInput as e:
                error = str(e)
                break
            except OSError as e:
                raise StorageError(f"cannot read input {f.uri} at byte {pos}: {e}") from None
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
            yield _lines_table(file_id, line_no, starts, [column([head], pa.large_binary()), rest])
            del chunk, head, rest  # this block's bytes are not held while the next is read
            line_no += len(ends)
    last = b"".join(carry)
    if error is not None:  # the partial line before the break belongs to the break
        yield _break_table(file_id, line_no + 1, carry_at, last, error)
    elif last:  # a last line without its newline is still a line
        yield _lines_table(
            file_id, line_no, np.array([carry_at], np.int64), [column([last], pa.large_binary())]
        )


def _lines_table(file_id: int, first: int, starts: np.ndarray, raw: list[pa.Array]) -> pa.Table:
    n = sum(len(a) for a in raw)
    return pa.table(
        [
            from_numpy(np.full(n, file_id), pa.int32()),
            from_numpy(np.arange(first + 1, first + n + 1)),
            from_numpy(starts),
            pa.chunked_array(raw, pa.large_binary()),
            pa.nulls(n, pa.string()),
        ],
        schema=LINES_SCHEMA,
    )


def _break_table(file_id: int, line: int, offset: int, partial: bytes, error: str) -> pa.Table:
    values = [[file_id], [line], [offset], [partial], [error]]
    return pa.table(
        [column(v, f.type) for v, f in zip(values, LINES_SCHEMA, strict=True)], schema=LINES_SCHEMA
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
    before them counted, so every line keeps its true number: each chunk of
    ``split_bytes`` is summarized by a Ray task (the chunks in parallel, on any node;
    the read also warms the page cache for the range's reader), the driver only adds
    up the summaries."""
    todo = [
        (fid, f)
        for fid, f in enumerate(inputs)
        if f.size > split_bytes and not is_remote(f.uri) and not f.path.endswith(".gz")
    ]
    # (in this process where there is no Ray: tools and tests that plan without a run)
    summarize = _chunk_summary.remote if ray.is_initialized() else chunk_summary
    refs = {
        fid: [
            summarize(f, start, split_bytes, storage, count)
            for start, count in chunks_of(f.size, split_bytes)
        ]
        for fid, f in todo
    }
    summaries = {fid: ray.get(r) if ray.is_initialized() else r for fid, r in refs.items()}
    units: list[tuple[int, tuple | None]] = []
    for fid, f in enumerate(inputs):
        if fid not in summaries or summaries[fid][0] is None:  # (gone since listed)
            units.append((fid, None))
            continue
        starts, lines_before = range_starts(summaries[fid], f.size)
        bounds = starts + [f.size]
        units += [
            (fid, (bounds[k], bounds[k + 1], lines_before[k]))
            for k in range(len(starts))
            if bounds[k] < bounds[k + 1]
        ]
    return units


NEWLINE = ord("\n")


def chunk_summary(
    f: InputFile, start: int, length: int, storage: Any, count: bool = True
) -> tuple | None:
    """(newlines, index of the first newline or -1, ends with a newline, bytes read) of
    ``length`` bytes from ``start``; None where the file cannot be read there. Without
    ``count``, the chunk is read only up to its first newline (0 newlines, and its
    ``length`` as the bytes read once that newline is found)."""
    newlines, first, last, done = 0, -1, b"", 0
    try:
        with open_range(f, start, storage) as stream:
            while first < 0 and done < length:  # lines are KBs: the first one is near
                piece = stream.read(min(length - done, 64 << 10))
                if not piece:
                    return newlines, first, False, done
                i = piece.find(b"\n")
                first = done + i if i >= 0 else -1
                if not count and first >= 0:
                    return 0, first, False, length
                newlines += piece.count(b"\n")
                done += len(piece)
                last = piece[-1:]
            if count and done < length:
                # One buffer read into again and again: fresh 16 MiB pieces cost a
                # third more CPU (allocation, page faults) than the count itself.
                buf = np.empty(min(length - done, 1 << 20), np.uint8)
                hits = np.empty(buf.size, np.bool_)
                while done < length:
                    n = stream.readinto(buf[: min(length - done, buf.size)])
                    if not n:
                        break
                    newlines += int(np.count_nonzero(np.equal(buf[:n], NEWLINE, out=hits[:n])))
                    done += n
                    last = buf[n - 1 : n].tobytes()
    except OSError:
        return None
    return newlines, first, last == b"\n", done


def chunks_of(size: int, split_bytes: int) -> list[tuple[int, bool]]:
    """``(start, count)`` of each chunk of a file to summarize: the lines of the last
    chunk precede no range start, so only its first newline is looked for (on
    make_corpus's 366 MB files and 256 MiB ranges, 30% of the bytes not counted)."""
    starts = range(0, size, split_bytes)
    return [(s, s + split_bytes < size) for s in starts]


_chunk_summary = ray.remote(num_cpus=1)(chunk_summary)


def range_starts(summaries: list[tuple | None], size: int) -> tuple[list[int], list[int]]:
    """Range starts moved to line starts, and the lines before each, from the chunks'
    summaries in order. A chunk that cannot be read ends the planning: the last range
    runs to the end, and its read meets the same error and reports it."""
    starts, lines_before = [0], [0]
    pos = newlines = 0
    pending = False  # a chunk boundary passed, waiting for the next line start
    for summary in summaries:
        if summary is None or not summary[3]:
            break
        count, first, ends_with_newline, length = summary
        if pending and first >= 0:
            starts.append(pos + first + 1)
            lines_before.append(newlines + 1)
            pending = False
        newlines += count
        pos += length
        if pos < size:
            if ends_with_newline:
                starts.append(pos)
                lines_before.append(newlines)
            else:
                pending = True
    return starts, lines_before


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
            raise InputChanged(
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
            copied = dict(
                zip(
                    todo,
                    get_all([copy.remote(inputs[i], dest, storage) for i, dest in todo.items()]),
                    strict=True,
                )
            )
        except BaseException:
            self.remove()
            raise
        self.inputs = [
            InputFile(uri=todo[i], path=todo[i], size=copied[i][0], mtime_ns=0) if i in todo else f
            for i, f in enumerate(inputs)
        ]
        # file id -> why the input breaks where its copy ends (a truncated .gz):
        # its reads end with that break, as a read of the input itself does
        self.breaks = {i: error for i, (_, error) in copied.items() if error is not None}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _copy_uncompressed(f: InputFile, dest: str, storage: Any) -> tuple[int, str | None]:
    """(size of the copy, why the input breaks there or None): a broken input's
    copy holds what could be read of it. A Ray task."""
    in_worker()
    scratch, name = os.path.split(dest)
    with writing(scratch, name, fix="set ray.scratch to a directory with room for the copies"):
        with open(dest, "wb") as out:
            try:
                with open_input(f, storage) as src:
                    shutil.copyfileobj(src, out, 16 << 20)
            except UnreadableInput as e:
                return out.tell(), str(e)
            return out.tell(), None


GZIP_RATIO = 6  # rollout JSONL over its .gz (make_corpus lines, gzip -1: 6.1)


def partitions_for(inputs: list[InputFile], settings) -> int:
    """Task-hash ranges for grouping whole rollouts: ~64 MiB of input lines each (a ``.gz`` counts
    ``GZIP_RATIO`` times its size: a worker holds a range's rollouts, not its
    bytes on disk). A function of the input only (never of the cluster), so
    outputs do not depend on it."""
    return _ranges(settings, _line_bytes(inputs), 64 << 20)


def _ranges(settings, amount: float, per_range: int) -> int:
    """``ray.partitions``, or ranges of ``per_range`` of ``amount`` (at most 1,024)."""
    return settings.ray.partitions or max(1, min(1024, math.ceil(amount / per_range)))


def line_bytes(f: InputFile) -> int:
    """The bytes of lines a file holds, as far as its size says (a ``.gz``: x ``GZIP_RATIO``)."""
    return f.size * (GZIP_RATIO if f.path.endswith(".gz") else 1)


def _line_bytes(inputs: list[InputFile]) -> int:
    return sum(map(line_bytes, inputs))


# Grouping by keys (engine/graph.py) sorts ~200 bytes of keys a line into task-hash
# ranges. A range is what one decide + build task holds; a piece of the sort (one split
# task's rows of one range) is an object its owner, the driver, holds: under Ray's
# 100 KiB for objects returned inline, every piece's bytes pass through the driver.
KEYED_RANGE_LINES = 20_000  # lines a range (~4 MB of keys)
PIECE_LINES = 1_000  # lines a sort piece at least (~200 KB of keys: in the object store)
PIECE_BYTES = 512 << 10  # of lines, a piece of whole rollouts at least (~200 KB in LZ4)
SPLIT_BLOCKS = 8  # parsed blocks of whole rollouts a split task holds (unless pieces need more)
PROBE_FILES = 8
PROBE_BYTES = 1 << 20


def mean_line_bytes(inputs: list[InputFile], storage: Any = None) -> float:
    """Bytes a line, from the first MiB of up to ``PROBE_FILES`` input files spread
    over the list: a function of the input only."""
    step = max(1, len(inputs) // PROBE_FILES)
    size = lines = 0
    for f in inputs[::step][:PROBE_FILES]:
        try:
            with open_input(f, storage) as stream:
                head = stream.read(PROBE_BYTES)
        except (UnreadableInput, StorageError, OSError):  # the reader says what is wrong
            continue
        size, lines = size + len(head), lines + head.count(b"\n")
    return size / lines if lines else float(max(size, PROBE_BYTES))


def sort_layout(inputs: list[InputFile], settings, tasks: int, keyed: bool) -> tuple[int, int]:
    """``(ranges, per_split)`` of a grouping sort: its task-hash ranges, and how many
    parsed blocks (of ``ray.block_bytes`` of lines) one split task cuts into them.

    By keys: ranges of ~``KEYED_RANGE_LINES`` lines, estimated from the input alone
    (``ray.partitions`` overrides it). Ranges counted by input bytes would make a range
    of 18 KB rollouts hold 5x fewer lines than one of 3.7 KB rollouts. Whole rollouts:
    ranges of :func:`partitions_for`.

    A split task takes enough blocks that each of its pieces (its rows of one range)
    holds ``PIECE_LINES`` keys or ``PIECE_BYTES`` of lines: a smaller piece would travel
    through the driver. Beyond that, the blocks of one of the ``tasks`` parse tasks, so
    that the splits are no more than those; of whole rollouts, at most ``SPLIT_BLOCKS``
    blocks (64 MiB of lines by default), which the task holds at once: one ``.gz`` is one
    parse task, and a split task that took all of a 560 MB one's rollouts held 1.4 GiB
    (2.5 GiB with its object store pages). The pieces come first: past 128 ranges (8 GiB
    of whole rollouts' lines, or ``ray.partitions``) a split task holds ranges x 512 KiB
    (a 10 GB ``.gz``: 960 ranges, 480 MiB of lines)."""
    total = _line_bytes(inputs)
    blocks = sum(max(1, math.ceil(line_bytes(f) / settings.ray.block_bytes)) for f in inputs)
    block = max(1.0, total / max(1, blocks))  # a parsed block's lines, in bytes
    per_task = math.ceil(blocks / max(1, tasks))
    if keyed:
        line = mean_line_bytes(inputs, settings.storage)
        ranges = _ranges(settings, total / line, KEYED_RANGE_LINES)
        need, most = ranges * PIECE_LINES * line, per_task  # (need: bytes of lines a split)
    else:
        ranges = partitions_for(inputs, settings)
        need, most = ranges * PIECE_BYTES, min(per_task, SPLIT_BLOCKS)
    return ranges, max(1, math.ceil(need / block), most)


def sample_lines(inputs: list[InputFile], storage: Any = None) -> Iterator[bytes]:
    """The first lines of each input file, in order: what a recipe looks at to
    choose its format before the run."""
    for f in inputs:
        try:
            with open_input(f, storage) as stream:
                head = stream.read(SAMPLE_BYTES)  # all before a break, if there is one
        except UnreadableInput:  # broken from its first byte: the run rejects it
            continue
        yield from head.split(b"\n")[:SAMPLE_LINES]


def read_whole(files: list[InputFile], storage: Any = None) -> list[tuple[str, bytes]]:
    """``(uri, bytes)`` of small files (task files), read on the driver."""
    out = []
    for f in files:
        with open_input(f, storage) as stream:
            out.append((f.uri, stream.read()))
    return out
