"""Write the outcome stream of a pipeline into a dataset directory.

The driver is the single writer of the JSONL files NeMo RL reads (one file per
split, records in a deterministic order), of their Parquet twins, and of the
rejects / filtered listings; it also keeps the counts, so that
``input_lines == used + sum(filtered) + sum(rejected)`` can be checked at the end.
"""

from __future__ import annotations

import array
import collections
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from gymray.records import parquet_schema
from gymray.storage import Staging

PARQUET_ROWS_PER_FILE = 200_000
SPLITS = ("train", "val")


class TaskStats:
    """Per task: rollouts, reward sum, min and max, as an ``(n_tasks, 4)`` array
    (32 bytes a task). Reads an outcome stream sorted by task, so a task can only
    continue from one block into the next."""

    def __init__(self):
        self.done: list[np.ndarray] = []
        self.open: tuple[int, np.ndarray] | None = None  # the last task seen, maybe not complete

    def add(self, t: pa.Table) -> None:
        import pyarrow.compute as pc

        rows = t.filter(pc.and_(pc.is_valid(t.column("status")), pc.is_valid(t.column("reward"))))
        if not rows.num_rows:
            return
        g = (
            rows.select(["task_hash", "reward"])
            .group_by("task_hash")
            .aggregate(
                [("reward", "count"), ("reward", "sum"), ("reward", "min"), ("reward", "max")]
            )
            .sort_by("task_hash")
        )
        keys = g.column("task_hash").to_numpy()
        stats = np.column_stack(
            [
                g.column(f"reward_{f}").to_numpy().astype(np.float64)
                for f in ("count", "sum", "min", "max")
            ]
        )
        if self.open is not None:
            key, last = self.open
            if keys[0] == key:
                stats[0] = (last[0] + stats[0, 0], last[1] + stats[0, 1],
                            min(last[2], stats[0, 2]), max(last[3], stats[0, 3]))  # fmt: skip
            else:
                self.done.append(last[None])
        self.done.append(stats[:-1])
        self.open = (keys[-1], stats[-1])

    def finish(self) -> np.ndarray:
        parts = self.done + ([self.open[1][None]] if self.open is not None else [])
        return np.concatenate(parts) if parts else np.zeros((0, 4))


@dataclass
class Counts:
    input_lines: int = 0
    used: int = 0
    filtered: collections.Counter = field(default_factory=collections.Counter)
    rejected: collections.Counter = field(default_factory=collections.Counter)
    records: dict = field(default_factory=lambda: {"train": 0, "val": 0})

    def as_dict(self) -> dict:
        return {
            "input_lines": self.input_lines,
            "used": self.used,
            "filtered": dict(sorted(self.filtered.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "records": dict(self.records),
        }

    def reconciles(self) -> bool:
        return self.input_lines == self.used + sum(self.filtered.values()) + sum(
            self.rejected.values()
        )


class _ParquetSplit:
    def __init__(self, staging: Staging, split: str, schema: pa.Schema):
        self.staging, self.split, self.schema = staging, split, schema
        self.writer: pq.ParquetWriter | None = None
        self.stream = None
        self.rows_in_file = 0
        self.paths: list[str] = []

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                rel = f"parquet/{self.split}/part-{len(self.paths):05d}.parquet"
                self.stream = self.staging.open(rel)
                self.writer = pq.ParquetWriter(self.stream, self.schema, compression="zstd")
                self.paths.append(rel)
                self.rows_in_file = 0
            room = PARQUET_ROWS_PER_FILE - self.rows_in_file
            part, table = table.slice(0, room), table.slice(room)
            self.writer.write_table(part)
            self.rows_in_file += part.num_rows
            if self.rows_in_file >= PARQUET_ROWS_PER_FILE:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.stream.close()
            self.writer = self.stream = None

    def finish(self) -> None:
        self.close()
        if not self.paths:  # an empty split still has a readable file with the schema
            self.write(self.schema.empty_table())
            self.close()


class DatasetSink:
    def __init__(
        self,
        staging: Staging,
        fmt: str,
        files: list[str],
        *,
        val_fraction: float,
        dedup: bool,
        per_task: bool = False,
    ):
        self.staging = staging
        self.fmt = fmt
        self.files = files
        self.val_fraction = val_fraction
        self.dedup = dedup
        self.schema = parquet_schema(fmt)
        self.counts = Counts()
        self.jsonl = {s: staging.open(f"{s}.jsonl") for s in SPLITS}
        self.parquet = {s: _ParquetSplit(staging, s, self.schema) for s in SPLITS}
        self.rejects = staging.open("rejects.jsonl")
        self.filtered = staging.open("filtered.jsonl")
        self.seen_content: set[int] = set()
        self.tools_hashes: set[int] = set()
        self.record_tasks: list[np.ndarray] = []  # task hash of every record, per block
        self.rewards: list[np.ndarray] = []
        self.train_u = array.array("d")  # per train record, to move a task to val at the end
        self.examples: list[dict] = []
        self.notes: collections.Counter = collections.Counter()
        self.per_file: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        # per task: rollouts, reward sum, min, max: pass rates and "why no pair" hints
        self.per_task = TaskStats() if per_task else None

    # ------------------------------------------------------------------ stream
    def consume(self, t: pa.Table) -> None:
        status = t.column("status").to_pylist()
        reason = t.column("reason").to_pylist()
        record = t.column("record").to_pylist()
        split_u = t.column("split_u").to_pylist()
        content_hash = t.column("content_hash").to_pylist()
        tools_hash = t.column("tools_hash").to_pylist()
        task_key = t.column("task_key").to_pylist()
        file_id = t.column("file_id").to_pylist()
        line = t.column("line").to_pylist()
        c = self.counts
        rows: dict[str, list[int]] = {"train": [], "val": []}
        rejected_rows, filtered = [], []
        rewards = t.column("reward")
        note = t.column("note").to_pylist()
        if self.per_task is not None:
            self.per_task.add(t)
        lines_mask = [s is not None for s in status]
        for i, st in enumerate(status):
            if st is not None:
                c.input_lines += 1
            if note[i] is not None:
                self.notes[note[i]] += 1
            if record[i] is not None:
                if self.dedup and content_hash[i] in self.seen_content:
                    if st == "used":
                        st = "filtered"
                        reason[i] = "duplicate"
                else:
                    if self.dedup:
                        self.seen_content.add(content_hash[i])
                    s = "val" if split_u[i] < self.val_fraction else "train"
                    rows[s].append(i)
                    self.tools_hashes.add(tools_hash[i])
                    if s == "train":
                        self.train_u.append(split_u[i])
                    if len(self.examples) < 3:
                        self.examples.append(orjson.loads(record[i]))
            if st is not None:
                pf = self.per_file[file_id[i]]
                pf[st] += 1
                if st == "rejected":
                    pf[f"rejected:{reason[i]}"] += 1
            if st == "used":
                c.used += 1
            elif st == "filtered":
                c.filtered[reason[i]] += 1
                filtered.append(
                    orjson.dumps(
                        {
                            "file": self.files[file_id[i]],
                            "line": line[i],
                            "reason": reason[i],
                            "task": task_key[i],
                        }
                    )
                    + b"\n"
                )
            elif st == "rejected":
                c.rejected[reason[i]] += 1
                rejected_rows.append(i)
        if any(lines_mask):
            valid = pa.compute.is_valid(rewards).to_numpy(zero_copy_only=False) & np.array(
                lines_mask
            )
            self.rewards.append(rewards.to_numpy(zero_copy_only=False)[valid].astype(np.float64))
        with_record = rows["train"] + rows["val"]
        if with_record:
            self.record_tasks.append(
                t.column("task_hash").take(pa.array(with_record, pa.int64())).to_numpy()
            )
        for s in SPLITS:
            idx = rows[s]
            if not idx:
                continue
            self.jsonl[s].write(b"".join(record[i] for i in idx))
            part = t.take(pa.array(idx, type=pa.int64())).select(
                [f"rec.{f.name}" for f in self.schema]
            )
            self.parquet[s].write(part.rename_columns([f.name for f in self.schema]))
            c.records[s] += len(idx)
        if rejected_rows:
            self.rejects.write(self._reject_lines(t, rejected_rows))
        if filtered:
            self.filtered.write(b"".join(filtered))

    def _reject_lines(self, t: pa.Table, rows: list[int]) -> bytes:
        cols = ["file_id", "line", "reason", "field", "detail", "raw_length", "raw"]
        out = []
        for r in t.take(pa.array(rows, type=pa.int64())).select(cols).to_pylist():
            file = self.files[r.pop("file_id")]
            out.append(orjson.dumps({"file": file, **r}) + b"\n")
        return b"".join(out)

    # ------------------------------------------------------------------ end
    def finish(self) -> dict:
        for s in SPLITS:
            self.jsonl[s].close()
            self.parquet[s].finish()
        self.rejects.close()
        self.filtered.close()
        tasks = np.unique(np.concatenate(self.record_tasks)) if self.record_tasks else ()
        self.tasks = len(tasks)
        moved = self._ensure_val()
        return {
            "counts": self.counts.as_dict(),
            "tools_differ": len(self.tools_hashes) > 1,
            "tasks": self.tasks,
            "moved_task_to_val": moved,
            "rewards": np.concatenate(self.rewards) if self.rewards else np.zeros(0),
            "parquet": {s: self.parquet[s].paths for s in SPLITS},
            "examples": self.examples,
            "stats": {"notes": dict(sorted(self.notes.items()))},
            "per_task": None if self.per_task is None else self.per_task.finish(),
            "per_file": {self.files[f]: self._file_counts(f) for f in sorted(self.per_file)},
        }

    def _file_counts(self, file_id: int) -> dict:
        pf = self.per_file[file_id]
        out = {k: pf[k] for k in ("used", "filtered", "rejected")}
        out["lines"] = sum(out.values())
        reasons = {k.split(":", 1)[1]: v for k, v in pf.items() if k.startswith("rejected:")}
        if reasons:
            out["top_reject"] = max(sorted(reasons), key=reasons.get)
        return out

    def _ensure_val(self) -> bool:
        """At least one val record when there are >= 2 tasks (and val is wanted):
        the task nearest to the split boundary moves from train to val."""
        if (
            self.val_fraction <= 0
            or self.counts.records["val"]
            or self.tasks < 2
            or not self.train_u
        ):
            return False
        target = min(self.train_u)
        move = np.array(self.train_u) == target
        lines = _read_all(self.staging, "train.jsonl").split(b"\n")[:-1]
        keep_lines = [ln for ln, m in zip(lines, move, strict=True) if not m]
        val_lines = [ln for ln, m in zip(lines, move, strict=True) if m]
        for name, chosen in (("train.jsonl", keep_lines), ("val.jsonl", val_lines)):
            with self.staging.open(name) as f:
                f.write(b"".join(x + b"\n" for x in chosen))
        table = pa.concat_tables(
            [
                pq.read_table(self.staging.fs.open_input_file(self.staging.local_path(p)))
                for p in self.parquet["train"].paths
            ]
        )
        for p in self.parquet["train"].paths + self.parquet["val"].paths:
            self.staging.delete(p)
        for s, mask in (("train", ~move), ("val", move)):
            self.parquet[s] = _ParquetSplit(self.staging, s, self.schema)
            self.parquet[s].write(table.filter(pa.array(mask)))
            self.parquet[s].finish()
        self.counts.records = {"train": int((~move).sum()), "val": int(move.sum())}
        return True


def _read_all(staging: Staging, rel: str) -> bytes:
    with staging.fs.open_input_stream(staging.local_path(rel)) as f:
        return f.read()
