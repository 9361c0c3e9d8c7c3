"""Writing in the workers: outcome rows become parts.

A worker that has a run of outcome rows in the dataset's final order (a sorted
block of a grouped recipe; the blocks of one read unit of a per-rollout recipe,
written one after the other) writes them where they will live, as one part named
by its first sort key so that the parts' names sort in the dataset's order
whatever worker wrote them:

- ``_parts/<key>.train.jsonl`` / ``.val.jsonl``: the records, one JSONL line each;
- ``parquet/<split>/<key>.parquet``: the same records, the format's fixed schema
  (recipes that drop duplicates stage them as ``_parts/<key>.<split>.arrow``, Arrow
  IPC, made Parquet once the duplicates are known: no compression is spent on
  records that are dropped, and no Parquet file is written twice);
- ``_parts/<key>.rejects.jsonl`` / ``.filtered.jsonl``: what was not used, and why;
- ``_parts/<key>.dup.jsonl`` (recipes that drop duplicates): for each record, the
  filtered line it gets should it turn out to duplicate an earlier one.

The worker returns a :class:`PartStats` (counts, and a few numbers per record and
per line): the driver decides from those alone what no single block can (which
records duplicate others, whether a task must move to val) and never sees record
bytes. See :mod:`gymray.dataset.assemble` for what happens next.
"""

from __future__ import annotations

import collections
import os
import pickle
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from gymray import formats
from gymray.engine.arrays import from_numpy, to_numpy, valid
from gymray.errors import GymrayError, StorageError
from gymray.storage import filesystem, is_remote
from gymray.storage.failures import writing

PARTS = "_parts"
SPLITS = ("train", "val")
# A part's status, what its task returns: (its key, its PartStats pickled), or (FAILED, a
# worker's GymrayError pickled); None where nothing was written. Plain Python: Ray ships
# an Arrow table through its own reducer, which imports pandas in the worker.
Status = tuple[str, bytes]
FAILED = "!failed"  # the key of a status that holds a worker's GymrayError
# How every Parquet file of a dataset is written. No dictionaries (record text never
# repeats) nor statistics: a quarter less CPU than pyarrow's defaults, same size.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": False,
                   "write_statistics": False}  # fmt: skip


def in_worker() -> None:
    """What every gymray function run by a Ray worker does first (the read, sort and
    write tasks, the Parquet and copy tasks): Arrow's buffers from
    the C library's allocator, which hands back what a block freed to the next block's
    Python objects. pyarrow's default (mimalloc) keeps it for Arrow alone; a map worker's
    peak private memory was 20-30 MiB higher with it (SFT, bench_sft).
    ``ARROW_DEFAULT_MEMORY_POOL``, if set, wins. Workers are the job's own; the
    driver's pool (a notebook's pyarrow) is left alone."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


@dataclass
class Target:
    """Where parts go: the staging directory of the dataset being written. A run that
    is retried (a worker was lost) writes its parts under other names (``attempt``),
    so that a task of the failed attempt still running cannot write over them."""

    output: str  # the output URI (for its file system and credentials)
    path: str  # the staging directory inside that file system
    storage: Any = None
    attempt: int = 0

    def fs(self):
        return filesystem(self.output, self.storage)[0]

    def join(self, rel: str) -> str:
        return f"{self.path.rstrip('/')}/{rel}"

    @property
    def parts(self) -> str:
        return PARTS if not self.attempt else f"{PARTS}.r{self.attempt}"

    @property
    def probe(self) -> str:
        return f"{self.parts}/.visible"

    def prepare(self) -> None:
        """The directories workers write into, and the file that proves they see them."""
        fs = self.fs()
        with writing(self.output, self.probe):
            for d in (self.parts, self.hashes_dir, "parquet/train", "parquet/val"):
                fs.create_dir(self.join(d), recursive=True)
            with fs.open_output_stream(self.join(self.probe)) as f:
                f.write(b"gymray: workers check that they see this file before they write\n")

    def parquet(self, split: str, key: str) -> str:
        prefix = "" if not self.attempt else f"r{self.attempt}-"
        return f"parquet/{split}/{prefix}{key}.parquet"

    @property
    def stop_file(self) -> str:
        """What asks the run's tasks to stop (see :mod:`gymray.engine.stopping`)."""
        return f"{self.parts}/.stop"

    def stop(self) -> None:
        """Asks the tasks writing into this attempt's parts to stop. An empty file: it
        can be made on a full disk."""
        with writing(self.output, self.stop_file):
            self.fs().open_output_stream(self.join(self.stop_file)).close()

    @property
    def hashes_dir(self) -> str:
        """Where parts list their records' content hashes (:func:`publish_hashes`)."""
        return f"{self.parts}/hashes"

    @property
    def shares_hashes(self) -> bool:
        """Whether parts publish their records' content hashes for the other tasks: on
        shared file systems, not on object stores (every task listing and reading every
        part's hashes would cost requests)."""
        return not is_remote(self.output)

    def arrow(self, split: str, key: str) -> str:
        """Where a part's records wait for the duplicate decisions (Arrow IPC)."""
        return f"{self.parts}/{key}.{split}.arrow"


@dataclass
class PartStats:
    """What the driver learns of one part: counts, and small arrays."""

    key: str
    lines: int = 0
    used: int = 0
    filtered: collections.Counter = field(default_factory=collections.Counter)
    rejected: collections.Counter = field(default_factory=collections.Counter)
    per_file: dict = field(default_factory=dict)  # file_id -> Counter
    per_env: dict = field(default_factory=dict)  # env -> Counter (statuses, records)
    notes: collections.Counter = field(default_factory=collections.Counter)  # of lines
    rewards: np.ndarray = None  # rewards of the lines that have one
    envs: list = field(default_factory=list)  # the environments the codes below stand for
    reward_env: np.ndarray = None  # code of each reward's environment (int32)
    task_hashes: np.ndarray = None  # grouped recipes: the tasks of the part, sorted
    tasks: np.ndarray = None  # (n, 4) per task: rollouts, reward sum, min, max
    records: dict = field(default_factory=dict)  # name -> array, one entry per record
    sizes: dict = field(default_factory=dict)  # part file kind -> bytes written
    input_bytes: int = 0  # raw bytes of the lines the part was made of (per-rollout recipes)


def part_key(row: dict, task_sorted: bool) -> str:
    """Fixed-width hex of a row's sort key, so that part names sort like their rows."""
    head = f"{(row['task_hash'] or 0) + (1 << 63):016x}" if task_sorted else ""
    return f"{head}{row['file_id']:08x}{row['line']:016x}{row['sub']:08x}"


_VISIBLE: set[str] = set()


def check_visible(target: Target, fs) -> None:
    """The staging directory must be the one the driver made: a worker on a node
    that does not share the output's storage would write where nobody reads."""
    if target.path in _VISIBLE:
        return
    info = fs.get_file_info(target.join(target.probe))
    if info.type.name == "NotFound":
        raise StorageError(
            f"output {target.output} is not visible from Ray node {socket.gethostname()}: "
            "gymray's workers write the dataset, so output must be on storage every Ray "
            "node can reach (a shared NFS/Lustre path, s3:// or gs://)"
        )
    _VISIBLE.add(target.path)


class _TableRows:
    """An Arrow block of outcome rows, read the way the part writer reads a builder."""

    NEEDED = ("file_id", "line", "status", "reason", "record", "split_u", "content_hash",
              "tools_hash", "task_key", "task_hash", "env", "chars", "value", "note", "reward")  # fmt: skip

    def __init__(self, table: pa.Table, fmt: formats.Format):
        self.table, self.fmt = table, fmt
        self.num_rows = table.num_rows
        self.cols = {n: table.column(n).to_pylist() for n in self.NEEDED if n != "reward"}

    def get(self, name: str) -> list:
        return self.cols[name]

    def rec_table(self, rows: list[int]) -> pa.Table:
        names = [f.name for f in self.fmt.parquet_schema()]
        part = self.table.take(from_numpy(rows)).select([f"rec.{n}" for n in names])
        return part.rename_columns(names)

    def reject_rows(self, rows: list[int]) -> list[dict]:
        cols = ["file_id", "line", "reason", "field", "detail", "raw_length", "raw"]
        return self.table.take(from_numpy(rows)).select(cols).to_pylist()

    def rewards(self) -> np.ndarray:
        return to_numpy(self.table.column("reward"))


def write_block(batch: Any, **kwargs: Any) -> Status | None:
    """Write one block of outcome rows (a table, its consecutive stretches, or an
    OutcomeBuilder's lists) as parts; return the part's status, None for no rows
    (``kwargs``: those of :func:`_write_block`).

    A GymrayError (a full disk, an output this node cannot see) is returned as a
    ``FAILED`` status, not raised: Ray would wrap it, drop its cause and log its
    traceback, where the driver raises it as it is, one line for the user."""
    try:
        return _write_block(batch, **kwargs)
    except GymrayError as e:
        return FAILED, pickle.dumps(e)


def _write_block(
    batch: Any,
    target: Target,
    fmt_name: str,
    files: list[str],
    val_fraction: float,
    dedup: bool,
    task_sorted: bool,
) -> Status | None:
    fmt = formats.get(fmt_name)
    tables = iter([batch]) if isinstance(batch, pa.Table) or hasattr(batch, "cols") else batch
    first = next((t for t in tables if t.num_rows), None)
    if first is None:
        return None
    fs = target.fs()
    check_visible(target, fs)
    if isinstance(first, pa.Table):
        head = first.slice(0, 1).select(["task_hash", "file_id", "line", "sub"]).to_pylist()[0]
    else:
        head = {k: first.get(k)[0] for k in ("task_hash", "file_id", "line", "sub")}
    part = _Part(fs, target, part_key(head, task_sorted), fmt, files, dedup)
    try:
        part.add(first, val_fraction, task_sorted)
        del first  # a block at a time: none is held while the next one is made
        for table in tables:
            part.add(table, val_fraction, task_sorted)
            del table
    except BaseException:
        part.close(quiet=True)  # the first failure is the one to report
        raise
    part.close()
    stats = part.finish()
    if dedup and not task_sorted and target.shares_hashes:
        publish_hashes(fs, target, stats)
    return stats.key, pickle.dumps(stats, protocol=5)


class _PartWriter:
    """Opens a part file the first time something is written to it. A failing
    write (disk full, permissions) raises a StorageIOError naming the part file."""

    def __init__(self, fs, target: Target, key: str, fmt: formats.Format, staged: bool):
        self.fs, self.target, self.key, self.fmt = fs, target, key, fmt
        self.staged = staged  # records as Arrow IPC, not Parquet
        self.streams: dict[str, Any] = {}
        self.names: dict[str, str] = {}  # stream -> its path in the dataset, for errors
        self.sizes: dict[str, int] = collections.Counter()
        self.parquet: dict[str, Any] = {}  # split -> ParquetWriter | RecordBatchFileWriter

    def write(self, kind: str, data: bytes) -> None:
        if not data:
            return
        rel = f"{self.target.parts}/{self.key}.{kind}.jsonl"
        with writing(self.target.output, rel):
            stream = self.streams.get(kind)
            if stream is None:
                path = self.target.join(rel)
                stream = self.streams[kind] = self.fs.open_output_stream(path, buffer_size=1 << 20)
                self.names[kind] = rel
            stream.write(data)
        self.sizes[kind] += len(data)

    def write_parquet(self, split: str, table: pa.Table) -> None:
        if not table.num_rows:
            return
        target = self.target
        rel = target.arrow(split, self.key) if self.staged else target.parquet(split, self.key)
        with writing(target.output, rel):
            writer = self.parquet.get(split)
            if writer is None:
                kind = f"parquet:{split}"
                stream = self.streams[kind] = self.fs.open_output_stream(target.join(rel))
                self.names[kind] = rel
                schema = self.fmt.parquet_schema()
                if self.staged:
                    # uncompressed where it stays on this file system's disk; LZ4 for
                    # an object store, where its bytes travel twice
                    options = pa.ipc.IpcWriteOptions(
                        compression="lz4" if is_remote(target.output) else None
                    )
                    writer = pa.ipc.new_file(stream, schema, options=options)
                else:
                    writer = pq.ParquetWriter(stream, schema, **PARQUET_OPTIONS)
                self.parquet[split] = writer
            writer.write_table(table)

    def close(self, quiet: bool = False) -> None:
        """Close everything (flushing the buffers, where a full disk shows), even
        after a failure; raise the first failure unless ``quiet``."""
        files = [(self.names[f"parquet:{s}"], w) for s, w in self.parquet.items()]
        files += [(self.names[k], s) for k, s in self.streams.items()]
        first = None
        for rel, f in files:
            try:
                with writing(self.target.output, rel):
                    if not getattr(f, "closed", False):
                        f.close()
            except Exception as e:  # noqa: BLE001 - every file gets closed; the first error wins
                first = first or e
        self.parquet.clear()
        if first is not None and not quiet:
            raise first


class _Part:
    """One part being written: its files, and the stats the driver will get."""

    def __init__(self, fs, target: Target, key: str, fmt: formats.Format, files, dedup: bool):
        self.writer = _PartWriter(fs, target, key, fmt, staged=dedup)
        self.stats = PartStats(key)
        self.files, self.dedup = files, dedup
        self.rec: dict[str, list] = collections.defaultdict(list)
        self.per_file: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        self.per_env: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.rewards: list[np.ndarray] = []
        self.tasks: list[tuple[np.ndarray, np.ndarray]] = []
        self.filtered_bytes = 0  # of the filtered listing so far: where a duplicate's line goes
        # Environments as codes (a line's and a record's), notes texts as one object each:
        # rows read from Arrow hold a string object each, and sent to the driver as they
        # were, they cost it ~70 bytes and a Python loop step a line (DPO 1M: ~100 MiB).
        self.env_codes: dict[str, int] = {}  # env -> its index in stats.envs
        self.reward_env: list[int] = []
        self.note_texts: dict[str, str] = {}

    def add(self, batch: Any, val_fraction: float, task_sorted: bool) -> None:
        stats, writer, files = self.stats, self.writer, self.files
        per_file, per_env = self.per_file, self.per_env
        rows = _TableRows(batch, writer.fmt) if isinstance(batch, pa.Table) else batch
        stats.input_bytes += getattr(rows, "input_bytes", 0)
        col = rows.cols
        rewards = rows.rewards()
        has_reward = (~np.isnan(rewards)).tolist()  # one vectorized test, not one a row
        records, statuses, envs = col["record"], col["status"], col["env"]
        with_record: list[int] = []  # rows holding a record, in order
        filtered_at: list[int] = []  # of each: where its line would go in the filtered listing
        rejected_rows, filtered, reward_rows = [], [], []
        for i, st in enumerate(statuses):
            if records[i] is not None:
                with_record.append(i)
                filtered_at.append(self.filtered_bytes)
            if st is None:
                continue
            env = envs[i]
            if records[i] is None and col["note"][i]:  # a record's notes count with it
                stats.notes.update(col["note"][i].split("\n"))
            stats.lines += 1
            per_file[col["file_id"][i]][st] += 1
            per_env[env][st] += 1
            if has_reward[i]:
                reward_rows.append(i)
            if st == "used":
                stats.used += 1
            elif st == "filtered":
                reason = col["reason"][i]
                stats.filtered[reason] += 1
                per_env[env][f"filtered:{reason}"] += 1
                filtered.append(_listing_line(files, col, i, reason))
                self.filtered_bytes += len(filtered[-1])
            elif st == "rejected":
                reason = col["reason"][i]
                stats.rejected[reason] += 1
                per_file[col["file_id"][i]][f"rejected:{reason}"] += 1
                per_env[env][f"rejected:{reason}"] += 1
                rejected_rows.append(i)
        by_split = self._add_records(col, with_record, filtered_at, val_fraction)
        self.rewards.append(rewards[reward_rows].astype(np.float64))
        codes = self.env_codes
        self.reward_env += [codes.setdefault(envs[i], len(codes)) for i in reward_rows]
        if task_sorted:
            self.tasks.append(_task_stats(batch))
        for split in SPLITS:
            idx = by_split[split]
            if idx:
                writer.write(split, b"".join(col["record"][i] for i in idx))
                writer.write_parquet(split, rows.rec_table(idx))
        writer.write("filtered", b"".join(filtered))
        if rejected_rows:
            writer.write("rejects", _reject_lines(rows.reject_rows(rejected_rows), files))

    def _add_records(self, col: dict, rows: list[int], filtered_at: list[int],
                     val_fraction: float) -> dict[str, list[int]]:  # fmt: skip
        """Note the records of ``rows`` (a column at a time) and list, for recipes
        that drop duplicates, the filtered line each gets should it be one; return
        the rows of each split."""
        rec, split_u = self.rec, col["split_u"]
        is_val = [split_u[i] < val_fraction for i in rows]
        rec["is_val"] += is_val
        # content hashes only where the driver drops duplicates on them (else None each)
        hashes = ("tools_hash", "content_hash") if self.dedup else ("tools_hash",)
        for name in ("split_u", "task_hash", *hashes, "chars", "value", "file_id"):
            values = col[name]
            rec[name] += [values[i] for i in rows]
        records, envs, notes = col["record"], col["env"], col["note"]
        rec["nbytes"] += [len(records[i]) for i in rows]
        rec["filtered_at"] += filtered_at
        codes, texts = self.env_codes, self.note_texts
        rec["env"] += [codes.setdefault(envs[i], len(codes)) for i in rows]
        rec["notes"] += [texts.setdefault(notes[i], notes[i]) for i in rows]  # (None too)
        if self.dedup:
            dups = [_listing_line(self.files, col, i, "duplicate") for i in rows]
            rec["dup_nbytes"] += [len(d) for d in dups]
            self.writer.write("dup", b"".join(dups))
        by_split: dict[str, list[int]] = {"train": [], "val": []}
        for i, val in zip(rows, is_val, strict=True):
            by_split["val" if val else "train"].append(i)
            self.per_env[envs[i]]["records:val" if val else "records:train"] += 1
        return by_split

    def close(self, quiet: bool = False) -> None:
        self.writer.close(quiet)

    def finish(self) -> PartStats:
        stats = self.stats
        stats.per_file, stats.per_env = dict(self.per_file), dict(self.per_env)
        stats.rewards = np.concatenate(self.rewards) if self.rewards else np.zeros(0)
        stats.envs, stats.reward_env = list(self.env_codes), np.array(self.reward_env, np.int32)
        types = {"env": np.int32, "value": np.float64}  # (None values: NaN, as read)
        stats.records = {
            k: v if k == "notes" else np.array(v, types.get(k)) for k, v in self.rec.items()
        }
        if self.tasks:
            stats.task_hashes = np.concatenate([h for h, _ in self.tasks])
            stats.tasks = np.concatenate([t for _, t in self.tasks])
        stats.sizes = dict(self.writer.sizes)
        return stats


HASHES = ".i64"  # a part's content hashes: little-endian int64


def publish_hashes(fs, target: Target, stats: PartStats) -> None:
    """The content hashes of a written part's records (a part in the dataset's line
    order), for the tasks reading later lines: theirs are duplicates, dropped before
    their bytes are written (:mod:`gymray.engine.stream`). Written aside and renamed,
    so that a reader finds a file whole."""
    hashes = stats.records.get("content_hash")
    if hashes is None or not len(hashes):
        return
    rel = f"{target.hashes_dir}/{stats.key}{HASHES}"
    with writing(target.output, rel):
        with fs.open_output_stream(target.join(f"{rel}.tmp")) as f:
            f.write(np.asarray(hashes, "<i8").tobytes())
        fs.move(target.join(f"{rel}.tmp"), target.join(rel))


def _listing_line(files: list[str], col: dict, i: int, reason: str) -> bytes:
    """A line of filtered.jsonl: where a used-or-not line is, and why it was not used."""
    return orjson.dumps({"file": files[col["file_id"][i]], "line": col["line"][i],
                         "reason": reason, "task": col["task_key"][i]}) + b"\n"  # fmt: skip


def _reject_lines(rows: list[dict], files: list[str]) -> bytes:
    out = []
    for r in rows:
        file = files[r.pop("file_id")]
        out.append(orjson.dumps({"file": file, **r}) + b"\n")
    return b"".join(out)


def _task_stats(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per task of a task-sorted block: its hash, and (rollouts, reward sum, min, max),
    in hash order. In numpy: Arrow's ``group_by`` imports ``pyarrow.dataset``, and with it
    pandas (see gymray.engine.arrays). ``np.add.at`` adds each task's rewards one by one
    in row order, as Arrow's sum did (``reduceat`` sums pairwise): the same floats."""
    rows = t.filter(from_numpy(valid(t.column("status")) & valid(t.column("reward")), pa.bool_()))
    if not rows.num_rows:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    rewards = to_numpy(rows.column("reward"))
    hashes, task = np.unique(to_numpy(rows.column("task_hash")), return_inverse=True)
    k = len(hashes)
    sums, lows, highs = np.zeros(k), np.full(k, np.inf), np.full(k, -np.inf)
    np.add.at(sums, task, rewards)
    np.minimum.at(lows, task, rewards)
    np.maximum.at(highs, task, rewards)
    counts = np.bincount(task, minlength=k).astype(np.float64)
    return hashes, np.column_stack([counts, sums, lows, highs])
