"""Grouped recipes (DPO, RM, GRPO best-of-n) as plain Ray tasks: one sort of the parsed
lines into fixed ranges of the task hash, so that a task's rows all meet in one place.

- ``parse_blocks``, a task per pack of read units: read -> parse into keys (or canonical
  rollouts), a block at a time.
- ``split_ranges``, a task per group of packs: their parsed blocks -> a piece per range.
- ``group_range``, a task per range: its pieces -> sorted -> decide per task + build +
  write. It returns its part's status: the driver gets stats only.

Not Ray Data: its sort is the same map and reduce tasks, and its executor, planning,
actors and imports cost the driver and every worker more than the sort itself. DPO on
1M rollouts (3.5 GB), 2 cores: see benchmarks/README.md. A lost piece is made again from
its map task (Ray's lineage); a lost task is run again (Ray's retries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from gymray.engine.arrays import from_numpy, packed, to_numpy, unpacked
from gymray.engine.blocks import (
    GROUP_KEYS,
    SORT_ORDER,
    Spec,
    build_block,
    decide_block,
    group_block,
    parse_rollouts,
    summarize_lines,
)
from gymray.engine.read import sort_layout
from gymray.engine.stopping import WAIT_S, StopCheck, given, wind_down
from gymray.engine.stream import read_unit
from gymray.engine.write import Status, in_worker, write_block
from gymray.errors import raise_if_stopped

GROUP_ORDER = [(k, "ascending") for k in GROUP_KEYS]


def statuses(
    tasks: list[list[int]], plan: dict, shuffle: str, settings: Any
) -> Iterator[Status | None]:
    """Run ``tasks`` (packs of read units) of ``plan`` (see
    :func:`gymray.engine.stream.read_and_write`) grouped by task, shuffling ``shuffle``
    (``keys``: keys, lines read back by offset; ``rollouts``: whole rollouts), and give
    each range's status as soon as its part is written. Tasks still running when
    the caller stops (a failure, a signal) are stopped (:mod:`gymray.engine.stopping`).

    Three stages, as many tasks each as the work allows: ``parse_blocks`` a task per pack
    (the CPU-heavy part: as many as the read tasks of a per-rollout run); ``split_ranges``
    a task per group of parsed blocks, large enough that each piece it cuts goes to the
    object store, not through the driver, and small enough to hold (see sort_layout);
    ``group_range`` a task per range."""
    keyed = shuffle == "keys"
    n_ranges, per_split = sort_layout(plan["inputs"], settings, len(tasks), keyed)
    shared = ray.put(plan)  # once, not once a task
    parsing = [parse_blocks.remote(t, shared, keyed) for t in tasks]
    split = split_ranges.options(num_returns=n_ranges).remote
    stop = plan["write_args"]["target"].stop
    parsed = _parsed(parsing, per_split, stop)
    pieces: list[Any] = []
    grouping: list[ray.ObjectRef] = []
    try:
        for blocks in parsed:
            out = split(n_ranges, *blocks)
            pieces.append(out if n_ranges > 1 else [out])
        grouping = [group_range.remote(shared, keyed, *(p[r] for p in pieces))
                    for r in range(n_ranges)]  # fmt: skip
        running = list(grouping)
        while running:
            ready, running = ray.wait(running, num_returns=1, timeout=WAIT_S)
            raise_if_stopped()  # (see gymray.errors.STOPS)
            for ref in ready:
                yield ray.get(ref)
    finally:
        parsed.close()  # (winds down the parse tasks still running)
        wind_down([p[0] for p in pieces] + grouping, stop)


def _parsed(
    parsing: list, per_split: int, stop: Callable[[], None]
) -> Iterator[list[ray.ObjectRef]]:
    """The blocks ``parsing`` (``parse_blocks`` tasks) give, ``per_split`` at a time in the
    order they come (the last group may be smaller). ``group_range`` sorts its rows by
    task, file and line, so which blocks meet in a split task changes no output."""
    group: list[ray.ObjectRef] = []
    # (fetch_local: the blocks are for the split tasks, not for this node)
    with closing(given(parsing, stop, fetch_local=False)) as items:
        for _, ref in items:
            if ref is None:  # a task's end
                continue
            group.append(ref)
            if len(group) == per_split:
                yield group
                group = []  # (the split task holds them now)
    if group:
        yield group


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def parse_blocks(units: list[int], plan: dict, keyed: bool) -> Iterator[pa.Buffer]:
    """Read and parse ``units``, a block of lines (``ray.block_bytes``) at a time, into
    keys (``keyed``) or canonical rollouts; yield each block's rows, packed (a worker
    holds one block at a time)."""
    in_worker()
    parse = summarize_lines if keyed else parse_rollouts
    stopped = StopCheck(plan["write_args"]["target"])
    for lines in chain.from_iterable(read_unit(plan, u) for u in units):
        if stopped.asked():
            return
        yield packed(parse(lines, plan["spec"]))


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def split_ranges(n_ranges: int, *blocks: pa.Buffer) -> Any:
    """Cut parsed ``blocks`` (packed) into the ``n_ranges`` task-hash ranges: the rows of
    each range, a compact table each, packed (None for none), one return a range."""
    in_worker()
    bounds = np.array(task_ranges(n_ranges), dtype=np.int64)
    held: list[list[pa.Table]] = [[] for _ in range(n_ranges)]
    for rows in map(unpacked, blocks):
        which = np.searchsorted(bounds, to_numpy(rows.column("task_hash")), side="right")
        order = np.argsort(which, kind="stable")
        ends = np.cumsum(np.bincount(which, minlength=n_ranges))
        for r, (start, end) in enumerate(zip(chain([0], ends), ends, strict=False)):
            if end > start:  # a compact table: a slice would carry the whole block along
                held[r].append(rows.take(from_numpy(order[start:end])))
    out = []
    for r in range(n_ranges):
        out.append(packed(pa.concat_tables(held[r])) if held[r] else None)
        held[r] = []  # (one range's copy at a time)
    return out if n_ranges > 1 else out[0]


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def group_range(plan: dict, keyed: bool, *pieces: pa.Buffer | None) -> Status | None:
    """A range's pieces (packed), sorted by task: decided, built and written (by keys), or
    grouped and written (whole rollouts). Returns the part's status."""
    in_worker()
    if StopCheck(plan["write_args"]["target"]).asked():  # (started after a stop)
        return None
    tables = [unpacked(p) for p in pieces if p is not None]
    if not tables:  # an empty range
        return None
    batch = pa.concat_tables(tables).sort_by(GROUP_ORDER)
    del tables, pieces
    spec, write_args = plan["spec"], plan["write_args"]
    if keyed:
        decided = decide_block(batch, spec).sort_by(SORT_ORDER)
        del batch
        return write_block(build_block(decided, spec, plan["inputs"]), **write_args)
    return write_block(grouped_stretches(batch, spec), **write_args)


def task_ranges(n: int) -> list[int]:
    """The ``n - 1`` boundaries that cut the int64 task hashes into ``n`` equal ranges.
    Hashes are uniform, so the ranges hold about as many tasks each."""
    return [-(1 << 63) + (i << 64) // n for i in range(1, n)]


def grouped_stretches(batch: pa.Table, spec: Spec, rows: int = 2000) -> Iterator[pa.Table]:
    """The outcomes of a block of whole rollouts sorted by task, in the dataset's order,
    ``rows`` rows (cut at the end of a task) at a time: a worker holds one stretch's
    rollouts and records, not its whole range's. DPO 250k from .gz, the most private
    memory of one worker: 677 MiB grouping each range at once, 460 MiB by stretches."""
    hashes = to_numpy(batch.column("task_hash"))
    start = 0
    while start < len(hashes):
        end = min(start + rows, len(hashes))
        end = int(np.searchsorted(hashes, hashes[end - 1], side="right"))  # the task's end
        yield group_block(batch.slice(start, end - start), spec).sort_by(SORT_ORDER)
        start = end
