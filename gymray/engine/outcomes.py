"""The outcome table: a row per input line (``status`` used / filtered / rejected,
with reason) and the records built from them (``record`` = the JSONL line, plus the
record's Parquet columns prefixed ``rec.``), collected column-wise by
:class:`OutcomeBuilder`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from gymray import formats
from gymray.engine.arrays import column
from gymray.rollouts import cut_raw

BASE_OUTCOME = [
    ("file_id", pa.int32()),
    ("line", pa.int64()),
    ("sub", pa.int32()),  # orders several records made from one line
    ("task_hash", pa.int64()),
    ("status", pa.string()),  # used | filtered | rejected | null (a record row of several lines)
    ("reason", pa.string()),
    ("field", pa.string()),
    ("detail", pa.string()),
    ("raw", pa.string()),
    ("raw_length", pa.int64()),
    ("reward", pa.float64()),
    ("task_key", pa.string()),
    ("env", pa.string()),
    ("split_u", pa.float64()),
    ("tools_hash", pa.int64()),
    ("content_hash", pa.int64()),
    ("chars", pa.int64()),  # of what NeMo RL tokenizes for the record
    ("value", pa.float64()),  # the recipe's number of a record (reward, gap, pass rate)
    ("note", pa.string()),  # facts about a record for the stats, one a line
    ("record", pa.large_binary()),
]


# Content hashes a task's ``seen`` holds at most (~60 bytes each, 30 MiB): past it, a block
# still drops its own repeats, and the driver's decisions the others, after their bytes.
MAX_SEEN = 1 << 19


def outcome_schema(fmt: formats.Format) -> pa.Schema:
    rec = fmt.parquet_schema()
    return pa.schema(BASE_OUTCOME + [pa.field(f"rec.{f.name}", f.type) for f in rec])


class OutcomeBuilder:
    """Collects outcome rows column-wise: an Arrow table for the grouped paths'
    shuffles and sorts, or (``get`` / ``rec_table`` / ``reject_rows``) what the part
    writer reads straight from the lists, where the rows never leave the worker."""

    def __init__(
        self,
        fmt: formats.Format,
        value=lambda record: None,
        dedup: bool = True,
        in_order: bool = False,
        seen: set[int] | None = None,
    ):
        self.fmt, self.value, self.dedup = fmt, value, dedup
        self.input_bytes = 0  # of the lines these rows come from (per-rollout recipes)
        # Rows added in the dataset's order (one record a line): a record whose content
        # an earlier row of this block had is a duplicate whatever the other blocks hold
        # (the first in order is kept), so it becomes a filtered line here, before its
        # Parquet values, part bytes and later rewrites are paid for. ``seen`` may hold
        # more: the content hashes of records earlier in the dataset than this block
        # (the task's earlier blocks, other tasks' finished parts: gymray.engine.stream).
        self.seen: set[int] | None = None
        if dedup and in_order:
            self.seen = set() if seen is None else seen
        self.own: set[int] = set()  # this block's, once ``seen`` is full
        self.schema = outcome_schema(fmt)
        self.rec_fields = list(fmt.fields)
        self.cols: dict[str, list] = {f.name: [] for f in self.schema}
        # the columns a row without a record leaves empty
        self.empty = ["record", "tools_hash", "content_hash", "chars", "value"] + [
            f"rec.{n}" for n in self.rec_fields
        ]

    @property
    def num_rows(self) -> int:
        return len(self.cols["line"])

    def get(self, name: str) -> list:
        return self.cols[name]

    def rec_table(self, rows: list[int]) -> pa.Table:
        """The records of ``rows`` with the format's Parquet schema."""
        schema = self.fmt.parquet_schema()
        return pa.table(
            {f.name: column([self.cols[f"rec.{f.name}"][i] for i in rows], f.type)
             for f in schema},
            schema=schema,
        )  # fmt: skip

    def reject_rows(self, rows: list[int]) -> list[dict]:
        names = ("file_id", "line", "reason", "field", "detail", "raw_length", "raw")
        return [{n: self.cols[n][i] for n in names} for i in rows]

    def rewards(self) -> np.ndarray:
        return np.array([np.nan if r is None else r for r in self.cols["reward"]], np.float64)

    def add(
        self,
        file_id: int,
        line: int,
        status: str | None,
        *,
        reason=None,
        field=None,
        detail=None,
        raw=None,
        reward=None,
        task_key=None,
        env=None,
        record=None,
        split_u=None,
        sub=0,
        task_hash=None,
        note=None,
    ) -> None:
        c = self.cols
        if record is not None:
            line_bytes, fields = formats.encode(record)
            tools_hash, content_hash = formats.content_hashes(fields, self.dedup)
            if self.seen is not None:
                if content_hash in self.seen or content_hash in self.own:
                    status, reason, note, record = "filtered", "duplicate", None, None
                elif len(self.seen) < MAX_SEEN:
                    self.seen.add(content_hash)
                else:
                    self.own.add(content_hash)
        text, length = cut_raw(raw) if raw is not None else (None, None)
        # one append a column, no dict a row: this runs for every input line
        c["file_id"].append(file_id)
        c["line"].append(line)
        c["sub"].append(sub)
        c["task_hash"].append(task_hash)
        c["status"].append(status)
        c["reason"].append(reason)
        c["field"].append(field)
        c["detail"].append(detail)
        c["raw"].append(text)
        c["raw_length"].append(length)
        c["reward"].append(reward)
        c["task_key"].append(task_key)
        c["env"].append(env)
        c["split_u"].append(split_u)
        c["note"].append(note)
        if record is None:
            for name in self.empty:
                c[name].append(None)
            return
        c["record"].append(line_bytes)
        for name in self.rec_fields:
            c[f"rec.{name}"].append(self.fmt.column_value(name, record, fields))
        c["tools_hash"].append(tools_hash)
        c["content_hash"].append(content_hash)
        c["chars"].append(self.fmt.trained_chars(record, fields))
        c["value"].append(self.value(record))

    def table(self) -> pa.Table:
        return pa.table(
            {f.name: column(self.cols[f.name], f.type) for f in self.schema},
            schema=self.schema,
        )
