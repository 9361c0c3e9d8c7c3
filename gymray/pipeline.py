"""The Ray Data side of prepare: read lines, parse, apply a recipe.

Rollout files are read as bytes and split on ``b"\\n"`` only (``read_text`` cuts
records at U+2028 and ``read_json`` null-pads heterogeneous structs). Every
block carries ``(file_id, line)`` so every outcome can name its input line.

The outcome of the pipeline is one table stream (see :data:`OUTCOME_SCHEMA`):
a row per input line (``status`` used / filtered / rejected, with reason), and
the records built from them (``record`` = the JSONL line, plus the record's
Parquet columns prefixed ``rec.``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from gymray.config import ConfigError, Settings
from gymray.records import FORMATS, column_value, content_hashes, encode, parquet_schema
from gymray.rollouts import (
    Reject,
    check_line,
    convert,
    cut_raw,
    hash64,
    parse_line,
    task_key_of,
    unit_interval,
)
from gymray.storage import InputFile, filesystem, is_remote, open_input

LINES_SCHEMA = pa.schema(
    [
        ("file_id", pa.int32()),
        ("line", pa.int64()),
        ("offset", pa.int64()),
        ("raw", pa.large_binary()),
    ]
)

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
    ("split_u", pa.float64()),
    ("tools_hash", pa.int64()),
    ("content_hash", pa.int64()),
    (
        "note",
        pa.string(),
    ),  # a fact about a record for the stats, e.g. where its ground truth came from
    ("record", pa.large_binary()),
]


def outcome_schema(fmt: str) -> pa.Schema:
    rec = parquet_schema(fmt)
    return pa.schema(BASE_OUTCOME + [pa.field(f"rec.{f.name}", f.type) for f in rec])


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


# --------------------------------------------------------------------------- rows
class OutcomeBuilder:
    """Collects outcome rows column-wise and turns them into an Arrow table."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.schema = outcome_schema(fmt)
        self.rec_fields = list(FORMATS[fmt])
        self.cols: dict[str, list] = {f.name: [] for f in self.schema}

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
        record=None,
        split_u=None,
        sub=0,
        task_hash=None,
        note=None,
    ) -> None:
        c = self.cols
        text, length = cut_raw(raw) if raw is not None else (None, None)
        scalars = {
            "file_id": file_id, "line": line, "sub": sub, "task_hash": task_hash, "status": status,
            "reason": reason, "field": field, "detail": detail, "raw": text, "raw_length": length,
            "reward": reward, "task_key": task_key, "split_u": split_u, "tools_hash": None,
            "content_hash": None, "note": note,
        }  # fmt: skip
        for name, value in scalars.items():
            c[name].append(value)
        if record is None:
            c["record"].append(None)
            for name in self.rec_fields:
                c[f"rec.{name}"].append(None)
        else:
            line_bytes, fields = encode(record)
            c["record"].append(line_bytes)
            for name in self.rec_fields:
                c[f"rec.{name}"].append(column_value(self.fmt, name, record, fields))
            tools_json, content = content_hashes(fields)
            c["tools_hash"][-1] = hash64(tools_json)
            c["content_hash"][-1] = hash64(content)

    def table(self) -> pa.Table:
        return pa.table(
            {f.name: pa.array(self.cols[f.name], type=f.type) for f in self.schema},
            schema=self.schema,
        )


def process_lines(batch: pa.Table, settings: Settings, files: list[str]) -> pa.Table:
    """Parse a block of lines and apply the per-rollout recipe (SFT)."""
    from gymray.recipes.sft import sft_record

    fmt = settings.sft.format
    out = OutcomeBuilder(fmt)
    file_ids = batch.column("file_id").to_pylist()
    line_nos = batch.column("line").to_pylist()
    raws = batch.column("raw").to_pylist()
    seed = settings.split.seed
    names = [os.path.basename(f) for f in files]
    threshold = settings.sft.reward_threshold
    for file_id, line, raw in zip(file_ids, line_nos, raws, strict=True):
        checked = check_line(raw)
        if not isinstance(checked, Reject) and threshold is not None and checked.reward < threshold:
            # Most lines of a typical run end here: skip the chat conversion for them.
            task_key = task_key_of(checked.obj, checked.request, names[file_id])[0]
            out.add(
                file_id,
                line,
                "filtered",
                reason="below_reward_threshold",
                reward=checked.reward,
                task_key=task_key,
            )
            continue
        r = (
            checked
            if isinstance(checked, Reject)
            else convert(checked, names[file_id], settings.chat.reasoning)
        )
        if isinstance(r, Reject):
            out.add(
                file_id, line, "rejected", reason=r.reason, field=r.field, detail=r.detail, raw=raw
            )
            continue
        record, reason = sft_record(r, (files[file_id], line), settings.sft, settings.chat)
        if record is None:
            out.add(file_id, line, "filtered", reason=reason, reward=r.reward, task_key=r.task_key)
            continue
        out.add(
            file_id,
            line,
            "used",
            reward=r.reward,
            task_key=r.task_key,
            record=record,
            split_u=unit_interval(r.task_key, seed),
            task_hash=hash64(r.task_key),
        )
    return out.table()


# --------------------------------------------------------------------------- grouped path
# Recipes that need all rollouts of a task together (DPO, GRPO pass rates, SFT
# best-of-n) parse first into canonical rows, hash-partition them on the task,
# and group within each block: Ray Data's groupby().map_groups is an order of
# magnitude slower on 250k small groups.
REJECT_COLUMNS = [  # set on rejects only
    ("reason", pa.string()),
    ("field", pa.string()),
    ("detail", pa.string()),
    ("raw", pa.large_binary()),
]
CANONICAL_SCHEMA = pa.schema(
    [("file_id", pa.int32()), ("line", pa.int64()), ("task_hash", pa.int64())]
    + REJECT_COLUMNS
    + [("rollout", pa.large_binary())]  # the canonical rollout, JSON, LZ4
)


def _rollout_json(r, algo: str) -> bytes:
    """The canonical rollout as the shuffle carries it: JSON, LZ4-compressed
    (2.4x smaller on real rollouts), behind its length."""
    import orjson

    if algo != "grpo":
        # Shuffle only what the recipe needs: the request dump and verifier
        # fields are GRPO's task row, dead weight for pairing.
        r.request, r.extras = {}, {}
    data = orjson.dumps(r)  # orjson writes dataclasses natively
    return len(data).to_bytes(4, "little") + _LZ4.compress(data, asbytes=True)


_LZ4 = pa.Codec("lz4")


def parse_rollouts(batch: pa.Table, settings: Settings, files: list[str]) -> pa.Table:
    """Parse a block of lines into canonical rows: rejects, or the rollout itself."""
    return _parsed_table(
        batch, settings, files, CANONICAL_SCHEMA,
        lambda r, file_id, line, raw: {
            "task_hash": hash64(r.task_key), "rollout": _rollout_json(r, settings.algo)
        },
    )  # fmt: skip


def _parsed_table(batch: pa.Table, settings: Settings, files: list[str], schema, fields):
    """Parse a block of lines into rows of ``schema``: a reject's reason columns,
    or ``fields(rollout, file_id, line, raw)`` for a rollout; every row also has
    its line's ``file_id``, ``line``, ``offset`` and ``length`` (where ``schema``
    has them)."""
    names = [os.path.basename(f) for f in files]
    cols: dict[str, list] = {f.name: [] for f in schema}
    for file_id, line, offset, raw in zip(
        batch.column("file_id").to_pylist(),
        batch.column("line").to_pylist(),
        batch.column("offset").to_pylist(),
        batch.column("raw").to_pylist(),
        strict=True,
    ):
        r = parse_line(raw, names[file_id], settings.chat.reasoning)
        if isinstance(r, Reject):
            # Rejects travel with the task of no one; spread them by line.
            row = {"task_hash": hash64(f"{file_id}:{line}"), "reason": r.reason,
                   "field": r.field, "detail": r.detail, "raw": raw}  # fmt: skip
        else:
            row = fields(r, file_id, line, raw)
        row.update(file_id=file_id, line=line, offset=offset, length=len(raw))
        for name, values in cols.items():
            values.append(row.get(name))
    return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in schema}, schema=schema)


def _rollout_from_json(data: bytes):
    import orjson

    from gymray.rollouts import Rollout

    size = int.from_bytes(data[:4], "little")
    return Rollout(**orjson.loads(_LZ4.decompress(data[4:], decompressed_size=size, asbytes=True)))


def group_block(
    batch: pa.Table, settings: Settings, files: list[str], fmt: str, recipe
) -> pa.Table:
    """Apply a grouped recipe to every task group of a block (a block holds whole groups)."""
    from gymray.recipes.common import Member

    out = OutcomeBuilder(fmt)
    file_ids = batch.column("file_id").to_pylist()
    lines = batch.column("line").to_pylist()
    hashes = batch.column("task_hash").to_pylist()
    rollouts = batch.column("rollout").to_pylist()
    groups = _groups(batch, out, file_ids, lines, hashes, rollouts)
    for th, idx in groups.items():
        members = [
            Member(_rollout_from_json(rollouts[i]), files[file_ids[i]], lines[i], k)
            for k, i in enumerate(idx)
        ]
        rows = [
            (file_ids[i], lines[i], m.rollout.reward, m.rollout.task_key)
            for i, m in zip(idx, members, strict=True)
        ]
        _emit_group(out, th, rows, recipe(members), settings.split.seed)
    return out.table()


def _groups(batch, out, file_ids, lines, hashes, payload) -> dict[int, list[int]]:
    """Row indices of each task of a block in input order (whatever order the
    shuffle delivered), after writing out the rejects (rows without payload)."""
    reasons = batch.column("reason").to_pylist()
    fields = batch.column("field").to_pylist()
    details = batch.column("detail").to_pylist()
    raws = batch.column("raw").to_pylist()  # set on rejects only
    groups: dict[int, list[int]] = {}
    for i in sorted(range(batch.num_rows), key=lambda i: (file_ids[i], lines[i])):
        if payload[i] is None:
            out.add(
                file_ids[i], lines[i], "rejected", reason=reasons[i], field=fields[i],
                detail=details[i], raw=raws[i], task_hash=hashes[i],
            )  # fmt: skip
        else:
            groups.setdefault(hashes[i], []).append(i)
    return groups


def _emit_group(out: OutcomeBuilder, th: int, rows: list[tuple], result, seed: int) -> None:
    """Outcome rows of one task group: a status per member, then its records.
    ``rows`` are the members' ``(file_id, line, reward, task_key)``."""
    for k, (file_id, line, reward, task_key) in enumerate(rows):
        status, reason = result.status.get(k, ("filtered", "unused"))
        out.add(
            file_id, line, status, reason=reason, reward=reward, task_key=task_key, task_hash=th
        )
    for sub, (record, anchor) in enumerate(result.records, start=1):
        file_id, line, _, task_key = rows[anchor]
        out.add(
            file_id, line, None, record=record, task_key=task_key, task_hash=th,
            split_u=unit_interval(task_key, seed), sub=sub, note=_note(record),
        )  # fmt: skip


# --------------------------------------------------------------------------- keyed path
# The default for local uncompressed inputs: the shuffle carries a small key per
# rollout (where its line is, its reward, the recipe's summary), never the
# rollout; each task's decision then reads back only the lines its records are
# made from. Memory stays bounded whatever the data size (the shuffle holds
# ~100 bytes a rollout), and the shuffle moves ~30x less data.
KEYS_SCHEMA = pa.schema(
    [
        ("file_id", pa.int32()),
        ("line", pa.int64()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
        ("crc", pa.int64()),  # of the line, checked when it is read again
        ("task_hash", pa.int64()),
        ("task_key", pa.string()),
        ("reward", pa.float64()),
    ]
    + REJECT_COLUMNS
    + [("summary", pa.large_binary())]  # the recipe's summarize(), JSON
)


def summarize_lines(batch: pa.Table, settings: Settings, files: list[str], recipe) -> pa.Table:
    """Parse a block of lines into keys: rejects, or the recipe's summary of each rollout."""
    import zlib

    import orjson

    from gymray.recipes.common import Member

    def key(r, file_id: int, line: int, raw: bytes) -> dict:
        summary = recipe.summarize(Member(r, files[file_id], line, -1))
        return {"task_hash": hash64(r.task_key), "task_key": r.task_key, "reward": r.reward,
                "summary": orjson.dumps(summary), "crc": zlib.crc32(raw)}  # fmt: skip

    return _parsed_table(batch, settings, files, KEYS_SCHEMA, key)


PLAN_FIELDS = ("file_id", "line", "sub", "task_hash", "task_key", "split_u")


def decision_schema(fmt: str) -> pa.Schema:
    """Outcome rows without records, and a ``plan`` per record to build."""
    return outcome_schema(fmt).append(pa.field("plan", pa.large_binary()))


def decide_block(
    batch: pa.Table, settings: Settings, files: list[str], fmt: str, recipe
) -> pa.Table:
    """Decide every task group of a block of keys: a status row per rollout, and
    a plan row per record (the record is built after the sort, by ``build_block``)."""
    import orjson

    from gymray.recipes.common import Key

    out = OutcomeBuilder(fmt)
    rejects_only = {name for name, _ in REJECT_COLUMNS}  # read by _groups
    c = {n: batch.column(n).to_pylist() for n in KEYS_SCHEMA.names if n not in rejects_only}
    file_ids, lines = c["file_id"], c["line"]
    plans: dict[str, list] = {name: [] for name in PLAN_FIELDS + ("plan",)}
    seed = settings.split.seed
    for th, idx in _groups(batch, out, file_ids, lines, c["task_hash"], c["summary"]).items():
        keys = [
            Key(k, c["reward"][i], orjson.loads(c["summary"][i]), (files[file_ids[i]], lines[i]))
            for k, i in enumerate(idx)
        ]
        result = recipe.decide(keys)
        _emit_group(
            out,
            th,
            [(file_ids[i], lines[i], c["reward"][i], c["task_key"][i]) for i in idx],
            result,
            seed,
        )
        for sub, (anchor, need, params) in enumerate(result.plans, start=1):
            # where each line is: what _LineReader.read takes, and the member's index
            refs = [
                [file_ids[j], lines[j], c["offset"][j], c["length"][j], c["crc"][j], k]
                for k, j in ((k, idx[k]) for k in need)
            ]
            i = idx[anchor]
            row = {"file_id": file_ids[i], "line": lines[i], "sub": sub, "task_hash": th,
                   "task_key": c["task_key"][i], "split_u": unit_interval(c["task_key"][i], seed),
                   "plan": orjson.dumps([refs, params])}  # fmt: skip
            for name, values in plans.items():
                values.append(row[name])
    schema = decision_schema(fmt)
    statuses = out.table()
    statuses = statuses.append_column("plan", pa.nulls(statuses.num_rows, pa.large_binary()))
    n = len(plans["plan"])
    planned = pa.table(
        [
            pa.array(plans[f.name], f.type) if f.name in plans else pa.nulls(n, f.type)
            for f in schema
        ],
        schema=schema,
    )
    return pa.concat_tables([statuses, planned])


SORT_KEYS = ["task_hash", "file_id", "line", "sub"]


def build_block(
    batch: pa.Table,
    settings: Settings,
    files: list[str],
    inputs: list[InputFile],
    fmt: str,
    recipe,
    plans_per_read: int = 2000,
) -> Iterator[pa.Table]:
    """Build the records a block of sorted decisions plans, ``plans_per_read``
    at a time: read back the lines they need (sorted by position), and yield
    each stretch of the block with its records in place, in the block's order,
    so that memory does not grow with the block."""
    import orjson
    import pyarrow.compute as pc

    from gymray.recipes.common import Member

    names = [os.path.basename(f) for f in files]
    has_plan = pc.is_valid(batch.column("plan")).to_numpy(zero_copy_only=False)
    plan_rows = np.flatnonzero(has_plan)
    statuses = batch.drop_columns(["plan"])
    planned = batch.select(list(PLAN_FIELDS) + ["plan"])
    start_row = 0
    with _LineReader(inputs, settings.storage) as reader:
        for first in range(0, len(plan_rows), plans_per_read):
            chunk = plan_rows[first : first + plans_per_read]
            last = first + plans_per_read >= len(plan_rows)
            end_row = batch.num_rows if last else int(chunk[-1]) + 1
            rows = planned.take(pa.array(chunk, pa.int64())).to_pylist()
            todo = [(row, *orjson.loads(row["plan"])) for row in rows]
            wanted = sorted(
                {tuple(ref[:5]) for _, refs, _ in todo for ref in refs},
                key=lambda ref: (ref[0], ref[2]),
            )
            raws = {ref: reader.read(*ref) for ref in wanted}
            out = OutcomeBuilder(fmt)
            for row, refs, params in todo:
                members = [
                    Member(
                        parse_line(raws[tuple(ref[:5])], names[ref[0]], settings.chat.reasoning),
                        files[ref[0]],
                        ref[1],
                        ref[5],
                    )
                    for ref in refs
                ]
                record = recipe.build(members, params)
                out.add(
                    row["file_id"], row["line"], None, record=record,
                    task_key=row["task_key"], task_hash=row["task_hash"],
                    split_u=row["split_u"], sub=row["sub"], note=_note(record),
                )  # fmt: skip
            yield _merge(statuses, has_plan, start_row, end_row, out.table())
            start_row = end_row
    if start_row < batch.num_rows:  # a block without plans
        yield _merge(statuses, has_plan, start_row, batch.num_rows, None)


def _merge(statuses: pa.Table, has_plan, start: int, end: int, records: pa.Table | None):
    """Rows ``[start, end)`` of a sorted block: its status rows, and the records
    built for its plan rows, in sort order."""
    keep = np.flatnonzero(~has_plan[start:end]) + start
    part = statuses.take(pa.array(keep, pa.int64()))
    if records is not None:
        part = pa.concat_tables([part, records])
    return part.sort_by([(k, "ascending") for k in SORT_KEYS])


class _LineReader:
    """Reads single lines back by position, one open file per input."""

    def __init__(self, inputs: list[InputFile], storage: Any):
        self.inputs, self.storage, self.open = inputs, storage, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for f in self.open.values():
            f.close()

    def read(self, file_id: int, line: int, offset: int, length: int, crc: int) -> bytes:
        import zlib

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


def _note(record: dict) -> str | None:
    source = record.get("meta", {}).get("ground_truth_source", "")
    return None if source == "" else f"ground_truth:{source}"


def grouped_recipe(settings: Settings, fmt: str, tasks: dict | None = None):
    """The :class:`~gymray.recipes.common.GroupedRecipe` for ``settings.algo``."""
    if settings.algo == "sft":
        from gymray.recipes.sft import BestOfN

        return BestOfN(settings.sft, settings.chat)
    if settings.algo == "dpo":
        from gymray.recipes.dpo import DPORecipe

        return DPORecipe(settings.dpo, settings.chat)
    from gymray.recipes.grpo import GRPORecipe

    return GRPORecipe(settings.grpo, fmt, tasks)


def _seekable(f: InputFile) -> bool:
    return not is_remote(f.uri) and not f.path.endswith(".gz")


def shuffle_mode(settings: Settings, inputs: list[InputFile]) -> tuple[str, bool]:
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


class _ScratchCopies:
    """Uncompressed copies of ``.gz`` and object-store inputs in ``scratch`` (a
    directory every Ray node can read), made in parallel by Ray tasks, so that
    lines can be read back by offset (and large files read as ranges). Local
    uncompressed inputs are used in place. Removed when prepare ends."""

    def __init__(self, scratch: str, inputs: list[InputFile], storage: Any):
        import uuid

        import ray

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
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _copy_uncompressed(f: InputFile, dest: str, storage: Any) -> int:
    import shutil

    with open_input(f, storage) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 16 << 20)
        return out.tell()


def record_format(settings: Settings, inputs: list[InputFile]) -> str:
    if settings.algo == "sft":
        return settings.sft.format
    if settings.algo == "dpo":
        return settings.dpo.format
    if settings.grpo.format != "auto":
        return settings.grpo.format
    return "nemo_gym" if _carries_agent_ref(inputs, settings) else "math"


def _carries_agent_ref(inputs: list[InputFile], settings: Settings) -> bool:
    """``grpo.format=auto``: NeMo Gym task rows when the rollouts name their agent."""
    import orjson

    for f in inputs:
        with open_input(f, settings.storage) as stream:
            head = stream.read(4 << 20)
        for raw in head.split(b"\n")[:50]:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "response" in obj:
                return isinstance(obj.get("agent_ref"), dict)
    return False


def load_tasks(tasks: list[InputFile], settings: Settings) -> tuple[dict, int]:
    """Task rows keyed by ``(_ng_task_index, _ng_rollout_index)``: a materialized
    inputs file has both; a plain task file's row number is the task index."""
    import orjson

    rows: dict = {}
    bad = 0
    for f in tasks:
        with open_input(f, settings.storage) as stream:
            data = stream.read()
        for n, raw in enumerate(x for x in data.split(b"\n") if x.strip()):
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            ti = row.get("_ng_task_index", n)
            rows[(ti, row.get("_ng_rollout_index"))] = row
            rows.setdefault((ti, None), row)
    return rows, bad


def partitions_for(inputs: list[InputFile], settings: Settings) -> int:
    """Hash partitions for grouping: ~64 MiB of input each. A function of the
    input only (never of the cluster), so outputs do not depend on it."""
    if settings.ray.partitions:
        return settings.ray.partitions
    total = sum(f.size for f in inputs)
    return max(1, min(1024, -(-total // (64 << 20))))


# --------------------------------------------------------------------------- driver
def run_pipeline(
    settings: Settings, inputs: list[InputFile], tasks: list[InputFile], staging
) -> dict:
    """Build the Ray Dataset for ``settings`` and write its outcome through a sink."""
    import ray.data

    from gymray.writer import DatasetSink

    files = [f.uri for f in inputs]  # names in records, rejects and counts: the user's
    block_bytes = settings.ray.block_bytes
    storage = settings.storage
    grouped = settings.algo != "sft" or settings.sft.best_of_n
    shuffle, copy = shuffle_mode(settings, inputs) if grouped else (None, False)
    copies = None
    if copy:
        copies = _ScratchCopies(settings.ray.scratch, inputs, storage)
        inputs = copies.inputs  # read from the copies from here on

    units = plan_units(inputs, settings.ray.split_bytes, storage)

    def read(batch: dict) -> Iterator[pa.Table]:
        for u in batch["unit"]:
            fid, span = units[int(u)]
            yield from read_lines(inputs[fid], fid, block_bytes, storage, span)

    ctx = ray.data.DataContext.get_current()
    # Ray Data reserves CPUs per operator, and the shuffle aggregators (idle
    # until the map side is done) hold a CPU share by default: on a small
    # cluster that leaves one parse task running at a time. Measured on 2
    # cores: DPO 100k rollouts 8.3 s -> 6.0 s; SFT 1.4 GB 3.6 s -> 2.9 s.
    tuned = {"enable_progress_bars": False, "op_resource_reservation_enabled": False}
    if grouped:
        tuned["hash_shuffle_operator_actor_num_cpus_override"] = 0.0
    tuned = {k: v for k, v in tuned.items() if hasattr(ctx, k)}  # names differ across Ray releases
    saved = {k: getattr(ctx, k) for k in tuned}
    saved_order = ctx.execution_options.preserve_order
    try:
        # SFT: blocks in input order; grouped: blocks in the sort's order
        ctx.execution_options.preserve_order = True
        for k, v in tuned.items():
            setattr(ctx, k, v)
        ds = ray.data.from_items(
            [{"unit": i} for i in range(len(units))], override_num_blocks=len(units)
        )
        ds = ds.map_batches(read, batch_size=1, batch_format="numpy")
        fmt = record_format(settings, inputs)
        if not grouped:
            ds = ds.map_batches(
                process_lines,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs={"settings": settings, "files": files},
            )
        else:
            task_rows = None
            if tasks:
                task_rows, bad_task_lines = load_tasks(tasks, settings)
            recipe = grouped_recipe(settings, fmt, task_rows)
            keyed = shuffle == "keys"
            kwargs = {"settings": settings, "files": files}
            ds = ds.map_batches(
                summarize_lines if keyed else parse_rollouts,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs=kwargs | ({"recipe": recipe} if keyed else {}),
            )
            ds = ds.repartition(partitions_for(inputs, settings), keys=["task_hash"])
            ds = ds.map_batches(
                decide_block if keyed else group_block,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs=kwargs | {"fmt": fmt, "recipe": recipe},
            )
            # Deterministic order whatever the partitioning: by task, then input position.
            ds = ds.sort(SORT_KEYS)
            if keyed:  # records are built after the sort, streaming into the sink
                ds = ds.map_batches(
                    build_block,
                    batch_size=None,
                    batch_format="pyarrow",
                    fn_kwargs={
                        "settings": settings,
                        "files": files,  # names: the user's, even when reading copies
                        "inputs": inputs,
                        "fmt": fmt,
                        "recipe": recipe,
                    },
                )
        sink = DatasetSink(
            staging,
            fmt,
            files,
            val_fraction=settings.split.val_fraction,
            dedup=settings.algo == "sft" and settings.sft.dedup,
            per_task=settings.algo != "sft",
        )
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            sink.consume(block)
    finally:
        ctx.execution_options.preserve_order = saved_order
        for k, v in saved.items():
            setattr(ctx, k, v)
        if copies is not None:
            copies.remove()
    out = sink.finish()
    out["format"] = fmt
    if grouped:
        out["stats"]["shuffle"] = shuffle
    warnings = []
    if settings.algo == "sft" and out["counts"]["records"]["train"] < settings.sft.min_examples:
        warnings.append(
            f"only {out['counts']['records']['train']} training records (fewer than sft.min_examples="
            f"{settings.sft.min_examples}): SFT on so few examples rarely helps"
        )
    warnings += _dead_file_warnings(out["per_file"])
    if out["moved_task_to_val"]:
        warnings.append(
            "no task fell in val by hash; the task nearest the split boundary was moved to val"
        )
    from gymray.recipes.explain import explain

    sections, more_warnings = explain(settings, out)
    out["report_sections"] = sections
    out["warnings"] = warnings + more_warnings
    return out


def _dead_file_warnings(per_file: dict) -> list[str]:
    """One warning per reason for input files of which every line was rejected."""
    dead: dict[str, list[str]] = {}
    for uri, fc in per_file.items():
        if fc["lines"] and fc["rejected"] == fc["lines"]:
            dead.setdefault(fc.get("top_reject", "?"), []).append(uri)
    out = []
    for reason, uris in sorted(dead.items()):
        shown = ", ".join(uris[:3]) + (f" and {len(uris) - 3} more" if len(uris) > 3 else "")
        hint = (
            " (task files such as example.jsonl have no response: pass rollouts files only, e.g. a glob '**/*rollouts*.jsonl')"
            if reason == "missing_response"
            else ""
        )
        out.append(
            f"every line of {len(uris)} file(s) was rejected, mostly {reason}: {shown}{hint}"
        )
    return out
