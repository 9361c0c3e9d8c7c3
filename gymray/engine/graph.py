"""The Ray Data plan of a run, whatever the recipe.

Per-rollout recipes: read -> parse + recipe + write, fused in one task per read unit
(a file, or ``ray.split_bytes`` of one), a block of lines at a time, a part per
``ray.split_bytes`` of lines (records never reach the object store). Grouped
recipes: read -> parse into keys (or canonical rollouts) -> one sort into fixed
ranges of the task hash (a task's rows all in one block) -> decide per task + build
+ write.
Every path ends with workers writing parts and returning their stats; the driver
gets stats only.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from gymray.engine.blocks import (
    GROUP_KEYS,
    SORT_ORDER,
    Spec,
    build_block,
    decide_block,
    group_block,
    parse_rollouts,
    process_lines,
    summarize_lines,
)
from gymray.engine.read import (
    ScratchCopies,
    line_bytes,
    plan_units,
    read_lines,
    shuffle_mode,
    sort_layout,
)
from gymray.engine.write import FAILED, STATUS_TABLE, Target, in_worker, write_block
from gymray.errors import RAY_LOST, causes, raise_if_stopped
from gymray.storage import InputFile

log = logging.getLogger("gymray")


@dataclass
class RunResult:
    parts: list  # PartStats, sorted by key (the dataset's order)
    shuffle: str | None  # what a grouped recipe shuffled: keys | rollouts
    seconds: float = 0.0  # of the Ray Data run


def _tune(ds: ray.data.Dataset) -> None:
    """Tune this dataset's own context (never the user's global DataContext).

    Ray Data reserves CPUs per operator: on a small cluster that leaves one parse
    task running at a time. Measured on 2 cores: SFT 1.4 GB 3.6 s -> 2.9 s."""
    ctx = ds.context
    if hasattr(ctx, "op_resource_reservation_enabled"):  # names differ across Ray releases
        ctx.op_resource_reservation_enabled = False


def run(spec: Spec, inputs: list[InputFile], target: Target, settings: Any) -> RunResult:
    """Run ``spec.recipe`` over ``inputs``; workers write parts under ``target``.

    A run that loses a Ray worker, actor or node Ray Data cannot recover by itself (a
    node taking objects along that lineage cannot remake) is run again, up to
    ``ray.retries`` times, its parts under new names; outputs are deterministic, so a
    retried run writes what a clean one would."""
    for attempt in range(settings.ray.retries + 1):
        try:
            return _run(spec, inputs, target, settings)
        except Exception as e:
            lost = next((x for x in causes(e) if type(x).__name__ in RAY_LOST), None)
            if lost is None or attempt == settings.ray.retries:
                raise
            log.warning(
                "a Ray worker or node was lost (%s): running the pipeline again (retry %d of %d)",
                type(lost).__name__, attempt + 1, settings.ray.retries,
            )  # fmt: skip
            target.attempt = attempt + 1
            target.prepare()
    raise AssertionError("unreachable")


def _run(spec: Spec, inputs: list[InputFile], target: Target, settings: Any) -> RunResult:
    recipe = spec.recipe
    grouped = recipe.grouped
    storage = settings.storage
    shuffle, copy = shuffle_mode(settings, inputs) if grouped else (None, False)
    copies = ScratchCopies(settings.ray.scratch, inputs, storage) if copy else None
    try:
        readable = copies.inputs if copies else inputs  # read from the copies from here on
        breaks = copies.breaks if copies else {}  # copies of broken inputs end at the break
        units = plan_units(readable, settings.ray.split_bytes, storage)
        block_bytes = settings.ray.block_bytes

        def read_unit(u: int) -> Iterator[pa.Table]:
            fid, span = units[u]
            f = readable[fid]
            broken = breaks.get(fid) if span is None or span[1] >= f.size else None
            return read_lines(f, fid, block_bytes, storage, span, broken)

        write_args = {
            "target": target,
            "fmt_name": recipe.format,
            "files": spec.files,
            "val_fraction": settings.split.val_fraction,
            "dedup": recipe.dedup,
            "task_sorted": grouped,
        }
        tasks = unit_tasks(readable, units, settings.ray.split_bytes, cluster_cpus())
        ds = ray.data.from_items([{"units": t} for t in tasks], override_num_blocks=len(tasks))
        _tune(ds)
        if not grouped:
            # Read, parse and write in one function: between two maps Ray Data would
            # coalesce the blocks of lines up to its own target (128 MiB), and a worker
            # would hold that much parsed, not ``ray.block_bytes``. Each ``ray.split_bytes``
            # of a unit's lines is one part, written a block at a time: the driver gets
            # a part's stats for a unit's range (or ``split_bytes`` of a whole .gz or
            # remote file), not for every block.
            part_bytes = settings.ray.split_bytes

            def read_and_write(batch: dict) -> Iterator[pa.Table]:
                in_worker()
                for u in chain.from_iterable(batch["units"]):
                    outcomes = _Parts(_outcomes(read_unit(int(u)), spec), part_bytes)
                    while not outcomes.done:
                        status = write_block(outcomes.next_part(), **write_args)
                        if not status.num_rows:
                            continue
                        yield status
                        if status.column("key")[0].as_py() == FAILED:
                            return  # the driver raises it: the rest is moot

            ds = ds.map_batches(read_and_write, batch_size=1, batch_format="numpy")
        else:
            keyed = shuffle == "keys"
            parse = summarize_lines if keyed else parse_rollouts

            def read_and_parse(batch: dict) -> Iterator[pa.Table]:
                in_worker()
                # as above: ``ray.block_bytes`` of lines at a time
                for u in chain.from_iterable(batch["units"]):
                    for lines in read_unit(int(u)):
                        yield parse(lines, spec)

            ds = ds.map_batches(read_and_parse, batch_size=1, batch_format="numpy")
            # fewer, larger blocks where read units are many (see sort_layout)
            n_ranges, blocks = sort_layout(readable, settings, len(tasks), keyed)
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
                fn_kwargs={"spec": spec, "inputs": readable, "write_args": write_args},
            )  # fmt: skip
        parts = []
        progress = Progress(settings.ray.progress_s, inputs)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            raise_if_stopped()  # (see gymray.errors.STOPS)
            keys, stats = batch.column("key").to_pylist(), batch.column("stats").to_pylist()
            for key, raw in zip(keys, stats, strict=True):
                if key == FAILED:
                    raise pickle.loads(raw)  # a worker's GymrayError, as it raised it
                parts.append(pickle.loads(raw))
                progress.add(parts[-1])
    finally:
        if copies is not None:
            copies.remove()
    return RunResult(sorted(parts, key=lambda p: p.key), shuffle)


def unit_tasks(
    inputs: list[InputFile], units: list[tuple], split_bytes: int, cpus: int
) -> list[list[int]]:
    """Read units packed into Ray tasks, in order: a task takes the next units while
    they hold at most ``split_bytes`` of lines together, or an equal share of four
    tasks a CPU (and of ``TASKS_AT_LEAST`` tasks: a cluster that autoscales, or whose
    head has no CPUs, has more CPUs than it shows now) where the input is smaller. A
    task costs the driver 9-14 ms whatever it reads: 500 small ``.gz`` files, one task
    each, cost it 6.7 (SFT) and 9.9 (DPO) CPU-s. Parts are still cut per unit, so
    outputs do not depend on the packing."""
    sizes = [span[1] - span[0] if span else line_bytes(inputs[fid]) for fid, span in units]
    most = max(1.0, min(split_bytes, sum(sizes) / max(4 * cpus, TASKS_AT_LEAST)))
    tasks: list[list[int]] = []
    held = 0
    for u, size in enumerate(sizes):
        if not tasks or held + size > most:
            tasks.append([])
            held = 0
        tasks[-1].append(u)
        held += size
    return tasks or [[]]


TASKS_AT_LEAST = 16


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


class Progress:
    """A line now and then while the parts come in, for logs that have no progress bar
    (a Ray Job's, a pipeline's): lines, MB read and MB/s, records, elapsed. Ray Data's
    own bars and logs are left as the user set them. Grouped recipes report once their
    records are built (the shuffle comes first), and without bytes read."""

    def __init__(self, every: float, inputs: list[InputFile]):
        self.every = every
        # the % of bytes read means something only when they are the files' own sizes
        compressed = any(f.uri.endswith(".gz") for f in inputs)
        self.total = None if compressed else sum(f.size for f in inputs)
        self.start = self.last = time.monotonic()
        self.lines = self.records = self.bytes = 0

    def add(self, stats: Any) -> None:
        self.lines += stats.lines
        self.records += len(stats.records.get("nbytes", ()))
        self.bytes += stats.input_bytes
        now = time.monotonic()
        if self.every and now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now - self.start))

    def line(self, seconds: float) -> str:
        read = ""
        if self.bytes:
            mb = self.bytes / 1e6
            share = f" of {self.total / 1e6:,.0f}" if self.total else ""
            read = f", {mb:,.0f}{share} MB read ({mb / max(seconds, 1e-3):,.0f} MB/s)"
        return f"progress: {self.lines:,} lines{read}, {self.records:,} records, {seconds:.0f} s"


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


def _outcomes(blocks: Iterator[pa.Table], spec: Spec) -> Iterator[Any]:
    """The outcome rows of each block of lines, holding one block at a time."""
    for lines in blocks:
        out = process_lines(lines, spec)
        del lines
        yield out
        del out


class _Parts:
    """A unit's outcome blocks cut into parts of about ``part_bytes`` of input lines."""

    def __init__(self, blocks: Iterator[Any], part_bytes: int):
        self.blocks, self.part_bytes, self.done = blocks, part_bytes, False

    def next_part(self) -> Iterator[Any]:
        """The blocks of the next part (``done`` once the unit's last is given)."""
        read = 0
        for out in self.blocks:
            read += out.input_bytes
            yield out
            del out  # not held while the next block is made
            if read >= self.part_bytes:
                return
        self.done = True
