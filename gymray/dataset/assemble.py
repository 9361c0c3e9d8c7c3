"""From parts to a dataset: the decisions no single block can make, then byte copies.

Workers wrote the parts (:mod:`gymray.engine.write`). What needs the
whole run is decided here, on the parts' stats alone:

- **duplicates** (recipes that drop them): of records with the same content
  (provenance aside), the first in the dataset's order is kept; the others go,
  and their lines are listed in ``filtered.jsonl`` as ``duplicate``, where they are;
- **val**: when no task fell in val by hash but there are >= 2 tasks, the task
  nearest the split boundary moves from train to val.

Then ``train.jsonl``, ``val.jsonl``, ``filtered.jsonl`` and ``rejects.jsonl`` are
assembled from the parts by byte ranges (``copy_file_range`` on shared file
systems, in parallel Ray tasks writing at their offsets; a streamed copy in one
task on object stores): no record is parsed or passes through the driver again.
In the same Ray tasks' time, the Parquet parts are written from the staged Arrow
parts without their duplicates (recipes that drop them), or rewritten where
records moved to val.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pyarrow.fs import FileSelector

from gymray.engine.arrays import from_numpy
from gymray.engine.graph import pack
from gymray.engine.write import PARQUET_OPTIONS, PARTS, SPLITS, PartStats, Target, in_worker
from gymray.storage.failures import writing

COPY_CHUNK = 256 << 20  # bytes of a destination file one copy task writes


@dataclass
class Listing:
    """The byte ranges one assembled file is made of, in order: ``length[i]`` bytes
    of ``srcs[src[i]]`` (a path in the staging dir) from ``offset[i]``. Arrays, not
    an object a range: a run has a range or two per duplicate, and listings go to
    Ray tasks as arguments (numpy arrays serialize out of band, in one piece)."""

    srcs: list[str]
    src: np.ndarray  # int64
    offset: np.ndarray  # int64
    length: np.ndarray  # int64

    @classmethod
    def merged(cls, srcs: list[str], src, offset, length) -> Listing:
        """The listing of these ranges, in order: empty ones left out, adjacent
        ranges of one file merged (one range a run, not one a record)."""
        src, offset, length = (np.asarray(a, np.int64) for a in (src, offset, length))
        keep = length > 0
        src, offset, length = src[keep], offset[keep], length[keep]
        if not len(src):
            return cls(srcs, src, offset, length)
        new_run = np.ones(len(src), bool)
        new_run[1:] = (src[1:] != src[:-1]) | (offset[1:] != offset[:-1] + length[:-1])
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], len(src)) - 1
        sizes = offset[ends] + length[ends] - offset[starts]
        return cls(srcs, src[starts], offset[starts], sizes)

    @property
    def total(self) -> int:
        return int(self.length.sum())

    def ranges(self) -> list[tuple[str, int, int]]:
        """``(src, offset, length)`` of each range, in order."""
        names = self.srcs
        return [
            (names[i], o, n)
            for i, o, n in zip(self.src.tolist(), self.offset.tolist(), self.length.tolist(),
                               strict=True)
        ]  # fmt: skip

    def chunks(self, size: int) -> list[tuple[int, Listing]]:
        """``(offset in the file, listing)`` of consecutive runs of ranges, each
        starting in another ``size`` bytes of the file: one copy task's share."""
        at = np.cumsum(self.length) - self.length
        cuts = np.flatnonzero(np.diff(at // size)) + 1
        return [
            (int(at[i[0]]), Listing(self.srcs, self.src[i], self.offset[i], self.length[i]))
            for i in np.split(np.arange(len(at)), cuts)
            if len(i)
        ]


class _Ranges:
    """Ranges gathered for one file, part by part, made one :class:`Listing`."""

    def __init__(self):
        self.index: dict[str, int] = {}  # src -> its number in the listing
        self.arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, srcs: list[str], src, offset, length) -> None:
        """Ranges ``srcs[src[i]]``, ``offset[i]``, ``length[i]``, after those added."""
        number = np.array([self.index.setdefault(n, len(self.index)) for n in srcs], np.int64)
        src = number[np.asarray(src, np.int64)]
        self.arrays.append((src, np.asarray(offset, np.int64), np.asarray(length, np.int64)))

    def listing(self) -> Listing:
        if not self.arrays:
            return Listing.merged([], [], [], [])
        src, offset, length = (np.concatenate(a) for a in zip(*self.arrays, strict=True))
        return Listing.merged(list(self.index), src, offset, length)


@dataclass
class Plan:
    """What the driver decided for the parts."""

    dropped: dict[str, np.ndarray] = field(default_factory=dict)  # key -> record mask
    moved: dict[str, np.ndarray] = field(default_factory=dict)  # key -> record mask
    moved_task: bool = False
    tools_differ: bool = False
    tasks: int = 0  # distinct tasks of the records kept
    records: dict = field(default_factory=lambda: {"train": 0, "val": 0})


def decide(parts: list[PartStats], dedup: bool, val_fraction: float) -> Plan:
    plan = Plan()
    with_records = [p for p in parts if len(p.records.get("nbytes", ()))]
    if not with_records:
        return plan
    names = ["is_val", "split_u", "task_hash", "tools_hash"] + (["content_hash"] if dedup else [])
    cat = {k: np.concatenate([p.records[k] for p in with_records]) for k in names}
    n = len(cat["is_val"])
    keep = np.ones(n, bool)
    if dedup:
        _, first = np.unique(cat["content_hash"], return_index=True)
        keep[:] = False
        keep[first] = True
    is_val = cat["is_val"].astype(bool)
    move = np.zeros(n, bool)
    plan.tasks = len(np.unique(cat["task_hash"][keep]))
    train = keep & ~is_val
    if val_fraction > 0 and not (keep & is_val).any() and plan.tasks >= 2 and train.any():
        target = cat["split_u"][train].min()
        move = train & (cat["split_u"] == target)
        plan.moved_task = True
    plan.tools_differ = len(np.unique(cat["tools_hash"][keep])) > 1
    plan.records = {
        "train": int((keep & ~is_val & ~move).sum()),
        "val": int((keep & (is_val | move)).sum()),
    }
    at = 0
    for p in with_records:
        m = len(p.records["nbytes"])
        if not keep[at : at + m].all():
            plan.dropped[p.key] = ~keep[at : at + m]
        if move[at : at + m].any():
            plan.moved[p.key] = move[at : at + m]
        at += m
    return plan


def listings(parts: list[PartStats], plan: Plan, target: Target) -> dict[str, Listing]:
    """The byte ranges each assembled file is made of, in order (numpy over each part's
    records: the driver does no per-record Python here)."""
    files = {name: _Ranges() for name in ("train.jsonl", "val.jsonl", "filtered.jsonl",
                                          "rejects.jsonl")}  # fmt: skip
    for p in parts:
        rel = lambda kind, key=p.key: f"{target.parts}/{key}.{kind}.jsonl"  # noqa: E731
        rec = p.records
        m = len(rec.get("nbytes", ()))
        dropped = plan.dropped.get(p.key, np.zeros(m, bool))
        moved = plan.moved.get(p.key, np.zeros(m, bool))
        if m:
            is_val = rec["is_val"].astype(bool)
            nbytes = np.asarray(rec["nbytes"], np.int64)
            offsets = np.empty(m, np.int64)  # where each record is in its part file
            for mask in (~is_val, is_val):
                sizes = nbytes[mask]
                offsets[mask] = np.cumsum(sizes) - sizes
            to_val = is_val | moved
            for dest, chosen in (
                ("train.jsonl", ~dropped & ~to_val),
                ("val.jsonl", ~dropped & to_val),
            ):
                j = np.flatnonzero(chosen)
                files[dest].add([rel("train"), rel("val")], is_val[j], offsets[j], nbytes[j])
        size = p.sizes.get("filtered", 0)
        if dropped.any():
            # the filtered listing, cut where each duplicate's line goes in
            j = np.flatnonzero(dropped)
            dup_nbytes = np.asarray(rec["dup_nbytes"], np.int64)
            dup_offsets = np.cumsum(dup_nbytes) - dup_nbytes
            cuts = np.asarray(rec["filtered_at"], np.int64)[j]
            k = len(j)
            src, offset, length = (np.empty(2 * k + 1, np.int64) for _ in range(3))
            src[0::2], src[1::2] = 0, 1
            offset[0::2] = np.concatenate([[0], cuts])
            length[0 : 2 * k : 2] = cuts - offset[0 : 2 * k : 2]
            length[2 * k] = size - cuts[-1]
            offset[1::2], length[1::2] = dup_offsets[j], dup_nbytes[j]
            files["filtered.jsonl"].add([rel("filtered"), rel("dup")], src, offset, length)
        else:
            files["filtered.jsonl"].add([rel("filtered")], [0], [0], [size])
        files["rejects.jsonl"].add([rel("rejects")], [0], [0], [p.sizes.get("rejects", 0)])
    return {name: ranges.listing() for name, ranges in files.items()}


def assemble(target: Target, files: dict[str, Listing], remote: bool) -> list:
    """Start writing each file from its ranges, in Ray tasks (returned)."""
    refs = []
    for name, listing in files.items():
        if remote:
            refs.append(_stream_copy.remote(target, name, listing))
            continue
        dest = os.path.join(target.path, name)
        with writing(target.output, name), open(dest, "wb") as f:
            f.truncate(listing.total)
        for at, chunk in listing.chunks(COPY_CHUNK):
            refs.append(_copy_at.remote(target, name, chunk, at))
    return refs


# A core each, like every gymray task: at most a worker a core runs at once, and Ray starts
# no worker beyond the map workers' (each new one is ~1 CPU-s of imports, and Ray ends
# workers beyond one a core after 1 s idle, so they were started again every run).
@ray.remote(num_cpus=1)
def _copy_at(target: Target, name: str, listing: Listing, dest_offset: int) -> None:
    """Copy ranges into a local/NFS file at their offsets: in the kernel where it can."""
    with writing(target.output, name):
        _copy_ranges(target.path, name, listing, dest_offset)


def _copy_ranges(base: str, name: str, listing: Listing, dest_offset: int) -> None:
    dst = os.open(os.path.join(base, name), os.O_WRONLY)
    opened: dict[str, int] = {}
    try:
        at = dest_offset
        for src, offset, length in listing.ranges():
            fd = opened.get(src)
            if fd is None:
                fd = opened[src] = os.open(os.path.join(base, src), os.O_RDONLY)
            _copy_range(fd, dst, offset, at, length)
            at += length
    finally:
        for fd in [dst, *opened.values()]:
            os.close(fd)


def _copy_range(src: int, dst: int, src_at: int, dst_at: int, length: int) -> None:
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, src_at + done, dst_at + done)
        except OSError:  # no kernel copy between these file systems: read and write
            data = os.pread(src, min(length - done, 8 << 20), src_at + done)
            n = os.pwrite(dst, data, dst_at + done)
        if n == 0:
            raise OSError(f"short copy: {length - done} bytes left")
        done += n


@ray.remote(num_cpus=1)  # (as _copy_at)
def _stream_copy(target: Target, name: str, listing: Listing) -> None:
    """Object stores: one object written from ranges of the part objects."""
    in_worker()
    fs = target.fs()
    opened = {}
    try:
        with writing(target.output, name), fs.open_output_stream(target.join(name)) as out:
            for part, offset, length in listing.ranges():
                src = opened.get(part) or opened.setdefault(
                    part, fs.open_input_file(target.join(part))
                )
                done = 0
                while done < length:
                    data = src.read_at(min(length - done, 16 << 20), offset + done)
                    out.write(data)
                    done += len(data)
    finally:
        for f in opened.values():
            f.close()


PARQUET_TASK_BYTES = 128 << 20  # at most, of records (JSONL bytes) one Parquet task writes


def parquet_tasks(parts: list[PartStats], plan: Plan, staged: bool, cpus: int) -> list[list]:
    """What each Parquet task writes: the parts from every part's staged Arrow records
    (``staged``: recipes that drop duplicates), or the Parquet parts whose records moved
    to val (the others are final as written). Consecutive parts, at most
    ``PARQUET_TASK_BYTES`` of records a task, and a task a CPU where there is less:
    with 128 MiB a task, the default threshold's 120 MB of SFT records was one task,
    and one core of two (15 of 16) had nothing to do. (Two tasks a CPU cost 1.5% more
    CPU than the old rule's two tasks for 2 CPUs at ``reward_threshold=0``.)"""
    todo, sizes = [], []
    for p in parts:
        has_records = len(p.records.get("nbytes", ()))
        if not (staged and has_records) and p.key not in plan.moved:
            continue
        todo.append((p.key, p.records["is_val"], plan.dropped.get(p.key), plan.moved.get(p.key)))
        sizes.append(p.sizes.get("train", 0) + p.sizes.get("val", 0))
    most = max(1.0, min(PARQUET_TASK_BYTES, sum(sizes) / max(cpus, 1)))
    return [[todo[i] for i in run] for run in pack(sizes, most)]


def write_parquet(
    target: Target, parts: list[PartStats], plan: Plan, staged: bool, cpus: int
) -> list:
    """Start the Ray tasks that write the Parquet parts (returned): see :func:`parquet_tasks`."""
    return [
        _parquet_parts.remote(target, chunk, staged)
        for chunk in parquet_tasks(parts, plan, staged, cpus)
    ]


@ray.remote(num_cpus=1)  # compression: a core each (the map workers' own processes serve)
def _parquet_parts(target: Target, todo: list[tuple], staged: bool) -> None:
    in_worker()
    fs = target.fs()
    for key, is_val, dropped, moved in todo:
        _parquet_part(fs, target, key, is_val, dropped, moved, staged)


def _parquet_part(fs, target: Target, key: str, is_val, dropped, moved, staged: bool) -> None:
    """Write one part's Parquet files: its records without the dropped ones, each in
    its split (``moved``: train records that go to val). A batch of the source at a
    time (a block's records: a row group each), so memory does not grow with parts.

    Each record is in the source file of its first split, in order. :func:`decide`
    moves records to val only when no val record is kept, so each split's records
    come from one source file, in their order."""
    is_val = is_val.astype(bool)
    n = len(is_val)
    dropped = np.zeros(n, bool) if dropped is None else dropped
    moved = np.zeros(n, bool) if moved is None else moved
    keep = {  # source split -> output split -> mask over the source's rows
        "train": {"train": (~moved & ~dropped)[~is_val], "val": (moved & ~dropped)[~is_val]},
        "val": {"val": ~dropped[is_val]},
    }
    src = {t: target.arrow(t, key) if staged else target.parquet(t, key) for t in SPLITS}
    written = []
    for s in SPLITS:
        sources = [t for t in SPLITS if s in keep[t] and keep[t][s].any()]
        if not sources:
            continue
        if len(sources) > 1:
            raise AssertionError(f"part {key}: {s} records in both source files")
        t = sources[0]
        # a rewritten Parquet part is its own source: written aside, moved at the end
        rel = target.parquet(s, key) + ("" if staged else ".rewrite")
        with writing(target.output, rel), fs.open_output_stream(target.join(rel)) as out:
            writer, at = None, 0
            for batch in _source_batches(fs, target, src[t], staged):
                mask = keep[t][s][at : at + batch.num_rows]
                at += batch.num_rows
                if mask.any():
                    writer = writer or pq.ParquetWriter(out, batch.schema, **PARQUET_OPTIONS)
                    writer.write_batch(batch.filter(from_numpy(mask, pa.bool_())))
            writer.close()
        written.append((s, rel))
    for t in SPLITS:  # the sources: staged ones done with, rewritten ones replaced
        if (is_val if t == "val" else ~is_val).any():
            with writing(target.output, src[t]):
                fs.delete_file(target.join(src[t]))
    if not staged:
        for s, rel in written:
            with writing(target.output, rel):
                fs.move(target.join(rel), target.join(target.parquet(s, key)))


def _source_batches(fs, target: Target, rel: str, staged: bool):
    """The record batches of a staged Arrow part or a Parquet part, in order, read one
    at a time."""
    with writing(target.output, rel), fs.open_input_file(target.join(rel)) as f:
        if staged:
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:
            yield from pq.ParquetFile(f).iter_batches()


def parquet_files(target: Target, parts: list[PartStats]) -> dict[str, list[str]]:
    """The Parquet files of each split (relative paths, in the dataset's order): those
    of this run's parts that exist (a part may have none for a split), never a file
    left by an earlier attempt."""
    fs = target.fs()
    out = {}
    for s in SPLITS:
        wanted = [target.parquet(s, p.key) for p in parts]
        infos = fs.get_file_info([target.join(rel) for rel in wanted]) if wanted else []
        out[s] = [rel for rel, info in zip(wanted, infos, strict=True) if info.is_file]
    return out


def write_empty_parquet(target: Target, split: str, schema: pa.Schema) -> str:
    rel = f"parquet/{split}/empty.parquet"
    fs = target.fs()
    with writing(target.output, rel), fs.open_output_stream(target.join(rel)) as f:
        # (no rows: from_batches, where empty_table would import pandas, see engine.arrays)
        pq.write_table(pa.Table.from_batches([], schema=schema), f, **PARQUET_OPTIONS)
    return rel


def remove_parts(target: Target, parquet: dict[str, list[str]]) -> None:
    """Remove the parts directories (of every attempt) and any Parquet file that is not
    the dataset's (a task of a failed attempt may have finished after it was given up)."""
    fs = target.fs()
    with writing(target.output, PARTS):
        for info in fs.get_file_info(FileSelector(target.path, allow_not_found=True)):
            if info.base_name.startswith(PARTS):
                fs.delete_dir(info.path)
        for split, keep in parquet.items():
            keep_paths = {target.join(rel) for rel in keep}
            folder = target.join(f"parquet/{split}")
            for info in fs.get_file_info(FileSelector(folder, allow_not_found=True)):
                if info.is_file and info.path not in keep_paths:
                    fs.delete_file(info.path)
