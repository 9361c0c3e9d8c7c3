"""Per-rollout recipes (SFT without best-of-n) as plain Ray tasks: read -> parse +
recipe + write, fused in one task per pack of read units, a part per ``ray.split_bytes``
of a unit's lines, written by the task; the driver gets each part's stats as it is written.

Not Ray Data: a per-rollout run exchanges nothing between its tasks, so Ray Data
would only schedule them, at a cost: its executor's thread and planning in the
driver, its actors, its imports in every worker. SFT on 2.9 GB, CLI runs on 2 cores
interleaved with the Ray Data version (``benchmarks/bench_ab.py``): wall and CPU-seconds
0.91x (medians), the driver's 2.03 -> 1.30 CPU-s. Nothing this module imports imports
Ray Data, so neither do the workers that run its tasks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from pyarrow.fs import FileSelector

from gymray.engine.blocks import Spec, process_lines
from gymray.engine.outcomes import MAX_SEEN
from gymray.engine.read import read_lines
from gymray.engine.stopping import StopCheck, Stopped, given
from gymray.engine.write import FAILED, HASHES, Status, Target, in_worker, part_key, write_block
from gymray.storage.failures import writing


def statuses(tasks: list[list[int]], plan: dict) -> Iterator[Status]:
    """Run ``tasks`` (packs of read units) with ``plan`` (what every task reads: see
    :func:`read_and_write`), spread over the nodes as Ray Data spreads its tasks, and
    give each part's status as soon as it is written, whichever task wrote it.
    Tasks still running when the caller stops (a failure, a signal) are stopped
    (:mod:`gymray.engine.stopping`)."""
    shared = ray.put(plan)  # once, not once a task
    gens = [read_and_write.remote(t, shared) for t in tasks]
    with closing(given(gens, plan["write_args"]["target"].stop)) as items:
        for _, ref in items:
            if ref is not None:
                yield ray.get(ref)


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def read_and_write(units: list[int], plan: dict) -> Iterator[Status]:
    """Read, parse and write ``units``, a block of lines (``ray.block_bytes``) at a time,
    and yield each part's status. A failed part is the last: the driver raises it.
    Ends early once the driver asks the run's tasks to stop."""
    in_worker()
    try:
        yield from _read_and_write(units, plan)
    except Stopped:
        return


def _read_and_write(units: list[int], plan: dict) -> Iterator[Status]:
    spec, part_bytes, write_args = plan["spec"], plan["part_bytes"], plan["write_args"]
    stopped = StopCheck(write_args["target"])
    # Recipes that drop duplicates: the content of every record this task made, and of
    # those other tasks wrote earlier in the dataset, so that a repeat is dropped here.
    seen = set() if write_args["dedup"] else None
    earlier = earlier_parts(write_args["target"], seen)
    for u in units:
        first = first_key(plan["units"][u])
        parts = Parts(_outcomes(read_unit(plan, u), spec, seen, stopped), part_bytes)
        while not parts.done:
            if earlier is not None:
                earlier.load(before=first)
            status = write_block(parts.next_part(), **write_args)
            if status is None:
                continue
            yield status
            key = status[0]
            if key == FAILED:
                return
            if earlier is not None:
                earlier.written(key)


def read_unit(plan: dict, u: int) -> Iterator[pa.Table]:
    """The blocks of lines of read unit ``u`` (a file, or a range of one) of ``plan``."""
    fid, span = plan["units"][u]
    f = plan["inputs"][fid]
    # a copy of a broken input ends at the break
    broken = plan["breaks"].get(fid) if span is None or span[1] >= f.size else None
    return read_lines(f, fid, plan["block_bytes"], plan["storage"], span, broken)


def _outcomes(
    blocks: Iterator[pa.Table], spec: Spec, seen: set[int] | None, stopped: StopCheck
) -> Iterator[Any]:
    """The outcome rows of each block of lines, holding one block at a time."""
    for lines in blocks:
        stopped()
        out = process_lines(lines, spec, seen)
        del lines
        yield out
        del out


class Parts:
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


def first_key(unit: tuple) -> str:
    """The part key of a read unit's first line: a part with a smaller key holds
    earlier lines of the dataset."""
    fid, span = unit
    line = span[2] + 1 if span else 1
    return part_key({"task_hash": None, "file_id": fid, "line": line, "sub": 0}, False)


def earlier_parts(target: Target, seen: set[int] | None) -> EarlierParts | None:
    """What adds other tasks' records to ``seen``, where parts share their hashes."""
    if seen is None or not target.shares_hashes:
        return None
    return EarlierParts(target, seen)


class EarlierParts:
    """Adds to ``seen`` the content hashes that other tasks' parts published
    (:func:`gymray.engine.write.publish_hashes`), of the parts before a line: a record
    with the same content is a duplicate, whatever else the run holds. Which parts are
    done when a task looks changes only where a duplicate is dropped (here, or by the
    driver after its bytes were written), never what the dataset holds.

    SFT on 2.9 GB (make_corpus: each content 4 times, lines shuffled over 8 files),
    2 cores, ``reward_threshold=0``: workers wrote 47,060 records for a dataset of
    36,240, where they had written 144,960 (90% of the repeats dropped before their
    bytes, Arrow staging and copies were paid for; 86% at the default threshold).
    """

    def __init__(self, target: Target, seen: set[int]):
        self.target, self.seen = target, seen
        self.fs = target.fs()
        self.loaded: set[str] = set()
        self.at = -REFRESH_S

    def written(self, key: str) -> None:
        """This task wrote the part ``key``: its records are in ``seen`` already, so its
        hashes file is not read back."""
        self.loaded.add(f"{key}{HASHES}")

    def load(self, before: str) -> None:
        """Load the parts' hashes not loaded yet (every ``REFRESH_S`` at most)."""
        if time.monotonic() - self.at < REFRESH_S or len(self.seen) >= MAX_SEEN:
            return
        self.at = time.monotonic()
        target, fs = self.target, self.fs
        with writing(target.output, target.hashes_dir):
            infos = fs.get_file_info(FileSelector(target.join(target.hashes_dir)))
            for info in infos:
                name = info.base_name  # <part key>.i64 (<part key>.i64.tmp: being written)
                if not name.endswith(HASHES) or name in self.loaded:
                    continue
                if name.removesuffix(HASHES) >= before:  # not earlier in the dataset
                    continue
                self.loaded.add(name)
                with fs.open_input_file(info.path) as f:
                    hashes = np.frombuffer(f.read(), "<i8")
                self.seen.update(hashes[: MAX_SEEN - len(self.seen)].tolist())
                if len(self.seen) >= MAX_SEEN:
                    return


REFRESH_S = 0.25  # how often a task looks for other tasks' parts
