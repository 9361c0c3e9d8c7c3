"""The Ray Data plan of grouped recipes (DPO, RM, GRPO best-of-n): read -> parse into
keys (or canonical rollouts) -> one sort into fixed ranges of the task hash (a task's
rows all in one block) -> decide per task + build + write. Workers write parts and
return their stats; the driver gets stats only. Only these runs import Ray Data:
the sort is where it earns its place (per-rollout recipes: :mod:`gymray.engine.stream`).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

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
from gymray.engine.stream import read_unit
from gymray.engine.write import STATUS_TABLE, in_worker, write_block


def statuses(tasks: list[list[int]], plan: dict, shuffle: str, settings: Any) -> Iterator[pa.Table]:
    """Run ``tasks`` (packs of read units) of ``plan`` (see
    :func:`gymray.engine.stream.read_and_write`) grouped by task, shuffling ``shuffle``
    (``keys``: keys, lines read back by offset; ``rollouts``: whole rollouts), and give
    the parts' status tables."""
    spec = plan["spec"]
    ds = ray.data.from_items([{"units": t} for t in tasks], override_num_blocks=len(tasks))
    _tune(ds)
    keyed = shuffle == "keys"
    parse = summarize_lines if keyed else parse_rollouts

    def read_and_parse(batch: dict) -> Iterator[pa.Table]:
        in_worker()
        # ``ray.block_bytes`` of lines at a time
        for u in chain.from_iterable(batch["units"]):
            for lines in read_unit(plan, int(u)):
                yield parse(lines, spec)

    ds = ds.map_batches(read_and_parse, batch_size=1, batch_format="numpy")
    # fewer, larger blocks where read units are many (see sort_layout)
    n_ranges, blocks = sort_layout(plan["inputs"], settings, len(tasks), keyed)
    if blocks < len(tasks):
        ds = ds.repartition(blocks)
    # One sort, into fixed ranges of the task hash: a task's rows all land in one
    # block, and the blocks follow one another in task order. Ray Data's sort is
    # made of tasks (a lost one is run again), where a keyed repartition needs
    # actors that every run starts anew; fixed ranges need no sampling pass,
    # and cut the same blocks on every run.
    ds = ds.sort(GROUP_KEYS, boundaries=task_ranges(n_ranges))
    ds = ds.map_batches(
        _decide_build_write if keyed else _group_write, batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={"spec": spec, "inputs": plan["inputs"], "write_args": plan["write_args"]},
    )  # fmt: skip
    return ds.iter_batches(batch_size=None, batch_format="pyarrow")


def _tune(ds: ray.data.Dataset) -> None:
    """Tune this dataset's own context (never the user's global DataContext).

    Ray Data reserves CPUs per operator: on a small cluster that leaves one parse
    task running at a time. Measured on 2 cores: SFT 1.4 GB 3.6 s -> 2.9 s."""
    ctx = ds.context
    if hasattr(ctx, "op_resource_reservation_enabled"):  # names differ across Ray releases
        ctx.op_resource_reservation_enabled = False


def task_ranges(n: int) -> list[int]:
    """The ``n - 1`` boundaries that cut the int64 task hashes into ``n`` equal ranges.
    Hashes are uniform, so the ranges hold about as many tasks each. One range is cut
    at the largest hash (Ray Data samples boundaries, on every sort key, when given
    none: a task could then straddle two blocks)."""
    return [-(1 << 63) + (i << 64) // n for i in range(1, n)] or [(1 << 63) - 1]


def _decide_build_write(batch: pa.Table, spec: Spec, inputs, write_args: dict) -> pa.Table:
    in_worker()
    if not batch.num_rows:  # an empty range (Ray Data gives it without columns)
        return STATUS_TABLE.empty_table()
    decided = decide_block(batch, spec).sort_by(SORT_ORDER)
    return write_block(build_block(decided, spec, inputs), **write_args)


def _group_write(batch: pa.Table, spec: Spec, inputs, write_args: dict) -> pa.Table:
    in_worker()
    if not batch.num_rows:
        return STATUS_TABLE.empty_table()
    return write_block(grouped_stretches(batch, spec), **write_args)


def grouped_stretches(batch: pa.Table, spec: Spec, rows: int = 2000) -> Iterator[pa.Table]:
    """The outcomes of a block of whole rollouts sorted by task, in the dataset's order,
    ``rows`` rows (cut at the end of a task) at a time: a worker holds one stretch's
    rollouts and records, not its whole range's. DPO 250k from .gz, the most private
    memory of one worker: 677 MiB grouping each range at once, 460 MiB by stretches."""
    hashes = batch.column("task_hash").to_numpy()
    start = 0
    while start < len(hashes):
        end = min(start + rows, len(hashes))
        end = int(np.searchsorted(hashes, hashes[end - 1], side="right"))  # the task's end
        yield group_block(batch.slice(start, end - start), spec).sort_by(SORT_ORDER)
        start = end
