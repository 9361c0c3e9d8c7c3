"""Per-block work: a block of lines in, a block of outcome rows out, for any recipe.

The outcome of a run is one table stream (see :mod:`gymray.engine.outcomes`): a row per
input line (``status`` used / filtered / rejected, with reason), and the records
built from them (``record`` = the JSONL line, plus the record's Parquet columns
prefixed ``rec.``). Grouped recipes get there in steps: parse into canonical
rows or small keys, group by task after a hash shuffle, decide, build.
"""

from __future__ import annotations

import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from gymray import formats
from gymray.engine.arrays import byte_lengths, column, from_numpy, valid
from gymray.engine.outcomes import OutcomeBuilder, outcome_schema
from gymray.engine.read import LineReader
from gymray.recipes.base import Key, Member, Recipe
from gymray.rollouts import (
    OPEN_BRACE,
    Reject,
    Rollout,
    check_line,
    convert,
    hash64,
    parse_line,
    task_key_of,
    unit_interval,
)
from gymray.storage import InputFile


@dataclass
class Spec:
    """What every block function needs, shipped to the workers once per task."""

    recipe: Recipe
    files: list[str]  # input URIs as the user named them: what records and rejects cite
    envs: list[str]  # the environment label of each input file (when a rollout names none)
    storage: Any = None
    # what stands for the agent in the task key of rollouts that name none: the
    # file's path below the inputs' common folder (collection runs number their
    # tasks from 0, and NeMo Gym names every environment's file example_rollouts.jsonl)
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = source_names(self.files)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def reasoning(self) -> str:
        return self.recipe.chat.reasoning

    @property
    def format(self) -> formats.Format:
        return formats.get(self.recipe.format)

    def outcomes(self, in_order: bool = False, seen: set[int] | None = None) -> OutcomeBuilder:
        """An empty outcome table of this recipe (``in_order``: rows come in the
        dataset's order, so a block can drop its own repeats, and those of ``seen``,
        content hashes of records earlier in the dataset)."""
        return OutcomeBuilder(self.format, self.recipe.value, self.recipe.dedup, in_order, seen)

    def env(self, agent: str | None, file_id: int) -> str:
        return agent or self.envs[file_id]


def source_names(files: list[str]) -> list[str]:
    """Each file's path below the common folder of all of them."""
    paths = [f.split("://", 1)[-1] for f in files]
    if not paths:
        return []
    root = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    return [posixpath.relpath(p, root) if root else p for p in paths]


def unreadable(error: str) -> Reject:
    """The reject of a file's unreadable rest (a read row with ``error`` set): one
    row at the line where reading stopped, holding the partial line before it."""
    return Reject("unreadable_file", None, f"the rest of the file cannot be read: {error}")


def _notes(spec: Spec, record: dict) -> str | None:
    return "\n".join(spec.recipe.notes(record)) or None


def opener_counts(raw: pa.Array | pa.ChunkedArray) -> list[int]:
    """Each line's count of ``[`` and ``{``, the bound :func:`gymray.rollouts.load_json`
    checks nesting with, counted over a block's bytes at once: counted a line at a
    time, the calls cost 7 us a DPO line and 20 us an SFT line, against 2.4 and 7."""
    counts: list[int] = []
    for chunk in raw.chunks if isinstance(raw, pa.ChunkedArray) else [raw]:
        n = len(chunk)
        wide = pa.types.is_large_binary(chunk.type) or pa.types.is_large_string(chunk.type)
        _, offsets_buf, data_buf = chunk.buffers()
        if n == 0 or data_buf is None:
            counts.extend([0] * n)
            continue
        width = np.int64 if wide else np.int32
        offsets = np.frombuffer(offsets_buf, width, n + 1, chunk.offset * width().itemsize)
        mask = np.bitwise_or(np.frombuffer(data_buf, np.uint8)[offsets[0] : offsets[-1]], 32)
        found = np.equal(mask, OPEN_BRACE, out=mask.view(bool))  # '[' | 32 == '{'
        ends = (offsets - offsets[0]).tolist()
        counts.extend([np.count_nonzero(found[a:b]) for a, b in pairwise(ends)])
    return counts


# --------------------------------------------------------------------------- per rollout
def process_lines(batch: pa.Table, spec: Spec, seen: set[int] | None = None) -> OutcomeBuilder:
    """Parse a block of lines and apply a per-rollout recipe (its rows stay Python lists:
    the part writer in the same task reads them). ``seen``: content hashes of records
    earlier in the dataset, which this block's records are duplicates of (and adds to)."""
    recipe, seed = spec.recipe, spec.seed
    out = spec.outcomes(in_order=True, seen=seen)
    # (split coordinate, hash) of each task key: a task's rollouts are usually
    # neighbours, and two keyed BLAKE2 hashes a record were 4% of this function
    tasks: dict[str, tuple[float, int]] = {}
    out.input_bytes = int(byte_lengths(batch.column("raw")).sum()) + batch.num_rows
    for file_id, line, raw, error, openers in zip(
        batch.column("file_id").to_pylist(),
        batch.column("line").to_pylist(),
        batch.column("raw").to_pylist(),
        batch.column("error").to_pylist(),
        opener_counts(batch.column("raw")),
        strict=True,
    ):
        checked = check_line(raw, openers) if error is None else unreadable(error)
        if isinstance(checked, Reject):
            out.add(file_id, line, "rejected", reason=checked.reason, field=checked.field,
                    detail=checked.detail, raw=raw, env=spec.envs[file_id])  # fmt: skip
            continue
        reason = recipe.prefilter(checked)
        if reason is not None:
            # Most lines of a typical run end here: skip the chat conversion for them.
            task_key, agent, _, _ = task_key_of(checked.obj, checked.request, spec.names[file_id])
            out.add(file_id, line, "filtered", reason=reason, reward=checked.reward,
                    task_key=task_key, env=spec.env(agent, file_id))  # fmt: skip
            continue
        r = convert(checked, spec.names[file_id], spec.reasoning)
        if isinstance(r, Reject):
            out.add(file_id, line, "rejected", reason=r.reason, field=r.field, detail=r.detail,
                    raw=raw, env=spec.envs[file_id])  # fmt: skip
            continue
        env = spec.env(r.agent, file_id)
        record, reason = recipe.record(r, (spec.files[file_id], line))
        if record is None:
            out.add(file_id, line, "filtered", reason=reason, reward=r.reward,
                    task_key=r.task_key, env=env)  # fmt: skip
            continue
        task = tasks.get(r.task_key)
        if task is None:
            task = tasks[r.task_key] = (unit_interval(r.task_key, seed), hash64(r.task_key))
        out.add(
            file_id, line, "used", reward=r.reward, task_key=r.task_key, env=env, record=record,
            split_u=task[0], task_hash=task[1], note=_notes(spec, record),
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------- grouped path
# Recipes that need all rollouts of a task together (DPO, GRPO pass rates, SFT
# best-of-n) parse first into canonical rows or keys, hash-partition them on the
# task, and group within each block: Ray Data's groupby().map_groups is an order
# of magnitude slower on 250k small groups.
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
_LZ4 = pa.Codec("lz4")


def _rollout_json(r: Rollout, needs_request: bool) -> bytes:
    """The canonical rollout as the shuffle carries it: JSON, LZ4-compressed
    (2.4x smaller on real rollouts), behind its length."""
    if not needs_request:
        # Shuffle only what the recipe needs: the request dump and verifier
        # fields are dead weight for pairing.
        r.request, r.extras = {}, {}
    data = orjson.dumps(r)  # orjson writes dataclasses natively
    return len(data).to_bytes(4, "little") + _LZ4.compress(data, asbytes=True)


def _rollout_from_json(data: bytes) -> Rollout:
    size = int.from_bytes(data[:4], "little")
    return Rollout(**orjson.loads(_LZ4.decompress(data[4:], decompressed_size=size, asbytes=True)))


def parse_rollouts(batch: pa.Table, spec: Spec) -> pa.Table:
    """Parse a block of lines into canonical rows: rejects, or the rollout itself."""
    needs_request = spec.recipe.needs_request
    task_hash = _task_hasher()
    return _parsed_table(
        batch, spec, CANONICAL_SCHEMA,
        lambda r, file_id, line, raw: {
            "task_hash": task_hash(r.task_key), "rollout": _rollout_json(r, needs_request)
        },
    )  # fmt: skip


def _task_hasher():
    """hash64 of task keys, each hashed once a block: a task's rollouts are neighbours."""
    hashes: dict[str, int] = {}

    def task_hash(task_key: str) -> int:
        h = hashes.get(task_key)
        if h is None:
            h = hashes[task_key] = hash64(task_key)
        return h

    return task_hash


def _parsed_table(batch: pa.Table, spec: Spec, schema: pa.Schema, fields) -> pa.Table:
    """Parse a block of lines into rows of ``schema``: a reject's reason columns,
    or ``fields(rollout, file_id, line, raw)`` for a rollout; every row also has
    its line's ``file_id``, ``line``, ``offset`` and ``length`` (where ``schema``
    has them), taken from the block as columns."""
    rows: list[dict] = []
    for file_id, line, raw, error, openers in zip(
        batch.column("file_id").to_pylist(),
        batch.column("line").to_pylist(),
        batch.column("raw").to_pylist(),
        batch.column("error").to_pylist(),
        opener_counts(batch.column("raw")),
        strict=True,
    ):
        if error is None:
            r = parse_line(raw, spec.names[file_id], spec.reasoning, openers)
        else:
            r = unreadable(error)
        if isinstance(r, Reject):
            # Rejects travel with the task of no one; spread them by line.
            rows.append({"task_hash": hash64(f"{file_id}:{line}"), "reason": r.reason,
                         "field": r.field, "detail": r.detail, "raw": raw})  # fmt: skip
        else:
            rows.append(fields(r, file_id, line, raw))

    # column by column: a loop over each row's columns cost DPO 6% of its CPU
    def field_column(f: pa.Field) -> pa.Array | pa.ChunkedArray:
        if f.name in LINE_FIELDS:
            return batch.column(f.name).cast(f.type)
        if f.name == "length":
            return from_numpy(byte_lengths(batch.column("raw")), f.type)
        return column([row.get(f.name) for row in rows], f.type)

    return pa.table([field_column(f) for f in schema], schema=schema)


LINE_FIELDS = ("file_id", "line", "offset")  # a block's columns that parsed rows keep


def group_block(batch: pa.Table, spec: Spec) -> pa.Table:
    """Apply a grouped recipe to every task group of a block (a block holds whole groups)."""
    out = spec.outcomes()
    file_ids = batch.column("file_id").to_pylist()
    lines = batch.column("line").to_pylist()
    hashes = batch.column("task_hash").to_pylist()
    rollouts = batch.column("rollout").to_pylist()
    for th, idx in _groups(batch, out, spec, file_ids, lines, hashes, rollouts).items():
        members = [
            Member(_rollout_from_json(rollouts[i]), spec.files[file_ids[i]], lines[i], k)
            for k, i in enumerate(idx)
        ]
        rows = [
            (file_ids[i], lines[i], m.rollout.reward, m.rollout.task_key,
             spec.env(m.rollout.agent, file_ids[i]))
            for i, m in zip(idx, members, strict=True)
        ]  # fmt: skip
        _emit_group(out, th, rows, spec.recipe(members), spec)
    return out.table()


def _groups(batch, out, spec, file_ids, lines, hashes, payload) -> dict[int, list[int]]:
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
                detail=details[i], raw=raws[i], task_hash=hashes[i], env=spec.envs[file_ids[i]],
            )  # fmt: skip
        else:
            groups.setdefault(hashes[i], []).append(i)
    return groups


def _emit_group(out: OutcomeBuilder, th: int, rows: list[tuple], result, spec: Spec) -> None:
    """Outcome rows of one task group: a status per member, then its records.
    ``rows`` are the members' ``(file_id, line, reward, task_key, env)``."""
    for k, (file_id, line, reward, task_key, env) in enumerate(rows):
        status, reason = result.status.get(k, ("filtered", "unused"))
        note = "\n".join(result.notes) or None if k == 0 else None
        out.add(file_id, line, status, reason=reason, reward=reward, task_key=task_key,
                task_hash=th, env=env, note=note)  # fmt: skip
    for sub, (record, anchor) in enumerate(result.records, start=1):
        file_id, line, _, task_key, env = rows[anchor]
        out.add(
            file_id, line, None, record=record, task_key=task_key, task_hash=th, env=env,
            split_u=unit_interval(task_key, spec.seed), sub=sub, note=_notes(spec, record),
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
        ("env", pa.string()),
        ("reward", pa.float64()),
    ]
    + REJECT_COLUMNS
    + [("summary", pa.large_binary())]  # the recipe's summarize(), JSON
)


def summarize_lines(batch: pa.Table, spec: Spec) -> pa.Table:
    """Parse a block of lines into keys: rejects, or the recipe's summary of each rollout."""

    task_hash = _task_hasher()

    def key(r: Rollout, file_id: int, line: int, raw: bytes) -> dict:
        summary = spec.recipe.summarize(Member(r, spec.files[file_id], line, -1))
        return {"task_hash": task_hash(r.task_key), "task_key": r.task_key, "reward": r.reward,
                "env": spec.env(r.agent, file_id), "summary": orjson.dumps(summary),
                "crc": zlib.crc32(raw)}  # fmt: skip

    return _parsed_table(batch, spec, KEYS_SCHEMA, key)


PLAN_FIELDS = ("file_id", "line", "sub", "task_hash", "task_key", "env", "split_u")
SORT_KEYS = ["task_hash", "file_id", "line", "sub"]  # the order of a dataset's rows
SORT_ORDER = [(k, "ascending") for k in SORT_KEYS]
GROUP_KEYS = SORT_KEYS[:3]  # the order of the parsed lines a grouped recipe sorts


def decision_schema(fmt: formats.Format) -> pa.Schema:
    """Outcome rows without records, and a ``plan`` per record to build."""
    return outcome_schema(fmt).append(pa.field("plan", pa.large_binary()))


def decide_block(batch: pa.Table, spec: Spec) -> pa.Table:
    """Decide every task group of a block of keys: a status row per rollout, and
    a plan row per record (the record is built after the sort, by ``build_block``)."""
    out = spec.outcomes()
    rejects_only = {name for name, _ in REJECT_COLUMNS}  # read by _groups
    c = {n: batch.column(n).to_pylist() for n in KEYS_SCHEMA.names if n not in rejects_only}
    file_ids, lines = c["file_id"], c["line"]
    plans: dict[str, list] = {name: [] for name in PLAN_FIELDS + ("plan",)}
    for th, idx in _groups(batch, out, spec, file_ids, lines, c["task_hash"], c["summary"]).items():
        keys = [
            Key(k, c["reward"][i], orjson.loads(c["summary"][i]),
                (spec.files[file_ids[i]], lines[i]))
            for k, i in enumerate(idx)
        ]  # fmt: skip
        result = spec.recipe.decide(keys)
        rows = [(file_ids[i], lines[i], c["reward"][i], c["task_key"][i], c["env"][i]) for i in idx]
        _emit_group(out, th, rows, result, spec)
        for sub, (anchor, need, params) in enumerate(result.plans, start=1):
            # where each line is: what LineReader.read takes, and the member's index
            refs = [
                [file_ids[j], lines[j], c["offset"][j], c["length"][j], c["crc"][j], k]
                for k, j in ((k, idx[k]) for k in need)
            ]
            i = idx[anchor]
            row = {"file_id": file_ids[i], "line": lines[i], "sub": sub, "task_hash": th,
                   "task_key": c["task_key"][i], "env": c["env"][i],
                   "split_u": unit_interval(c["task_key"][i], spec.seed),
                   "plan": orjson.dumps([refs, params])}  # fmt: skip
            for name, values in plans.items():
                values.append(row[name])
    schema = decision_schema(spec.format)
    statuses = out.table()
    statuses = statuses.append_column("plan", pa.nulls(statuses.num_rows, pa.large_binary()))
    n = len(plans["plan"])
    planned = pa.table(
        [column(plans[f.name], f.type) if f.name in plans else pa.nulls(n, f.type) for f in schema],
        schema=schema,
    )
    return pa.concat_tables([statuses, planned])


def build_block(
    batch: pa.Table, spec: Spec, inputs: list[InputFile], plans_per_read: int = 2000
) -> Iterator[pa.Table]:
    """Build the records a block of sorted decisions plans, ``plans_per_read``
    at a time: read back the lines they need (sorted by position), and yield
    each stretch of the block with its records in place, in the block's order,
    so that memory does not grow with the block."""
    has_plan = valid(batch.column("plan"))
    plan_rows = np.flatnonzero(has_plan)
    statuses = batch.drop_columns(["plan"])
    planned = batch.select(list(PLAN_FIELDS) + ["plan"])
    start_row = 0
    with LineReader(inputs, spec.storage) as reader:
        for first in range(0, len(plan_rows), plans_per_read):
            chunk = plan_rows[first : first + plans_per_read]
            last = first + plans_per_read >= len(plan_rows)
            end_row = batch.num_rows if last else int(chunk[-1]) + 1
            rows = planned.take(from_numpy(chunk)).to_pylist()
            todo = [(row, *orjson.loads(row["plan"])) for row in rows]
            wanted = sorted(
                {tuple(ref[:5]) for _, refs, _ in todo for ref in refs},
                key=lambda ref: (ref[0], ref[2]),
            )
            raws = {ref: reader.read(*ref) for ref in wanted}
            out = spec.outcomes()
            for row, refs, params in todo:
                # The reader checked each line's length and CRC: they are the bytes
                # summarize_lines parsed, whose nesting it checked (openers=0).
                members = [
                    Member(
                        parse_line(raws[tuple(ref[:5])], spec.names[ref[0]], spec.reasoning, 0),
                        spec.files[ref[0]],
                        ref[1],
                        ref[5],
                    )
                    for ref in refs
                ]
                record = spec.recipe.build(members, params)
                out.add(
                    row["file_id"], row["line"], None, record=record, task_key=row["task_key"],
                    task_hash=row["task_hash"], env=row["env"], split_u=row["split_u"],
                    sub=row["sub"], note=_notes(spec, record),
                )  # fmt: skip
            yield _merge(statuses, has_plan, start_row, end_row, out.table())
            start_row = end_row
    if start_row < batch.num_rows:  # a block without plans
        yield _merge(statuses, has_plan, start_row, batch.num_rows, None)


def _merge(statuses: pa.Table, has_plan, start: int, end: int, records: pa.Table | None):
    """Rows ``[start, end)`` of a sorted block: its status rows, and the records
    built for its plan rows, in sort order."""
    keep = np.flatnonzero(~has_plan[start:end]) + start
    part = statuses.take(from_numpy(keep))
    if records is not None:
        part = pa.concat_tables([part, records])
    return part.sort_by(SORT_ORDER)
