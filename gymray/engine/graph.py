"""The plan of a run, whatever the recipe: which read units, packed into which tasks,
run by which engine, and the parts' stats collected as workers write them.

Per-rollout recipes run as plain Ray tasks (:mod:`gymray.engine.stream`); grouped
recipes as plain Ray tasks around one sort (:mod:`gymray.engine.grouped`). Either way
workers write parts and return their stats; the driver gets stats only (records
never reach the object store or the driver).
"""

from __future__ import annotations

import logging
import pickle
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import ray

from gymray.engine import grouped, stream
from gymray.engine.blocks import Spec
from gymray.engine.read import ScratchCopies, line_bytes, plan_units, shuffle_mode
from gymray.engine.write import FAILED, Target
from gymray.errors import RAY_LOST, causes, raise_if_stopped
from gymray.storage import InputFile

log = logging.getLogger("gymray")


@dataclass
class RunResult:
    parts: list  # PartStats, sorted by key (the dataset's order)
    shuffle: str | None  # what a grouped recipe shuffled: keys | rollouts
    seconds: float = 0.0  # of the Ray run


def run(spec: Spec, inputs: list[InputFile], target: Target, settings: Any) -> RunResult:
    """Run ``spec.recipe`` over ``inputs``; workers write parts under ``target``.

    A run that loses a Ray worker, actor or node Ray cannot recover by itself (a task
    out of retries, a node taking objects along that lineage cannot remake) is run again,
    up to ``ray.retries`` times, its parts under new names; outputs are deterministic, so
    a retried run writes what a clean one would."""
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
    recipe, storage = spec.recipe, spec.storage
    shuffle, copy = shuffle_mode(settings, inputs) if recipe.grouped else (None, False)
    copies = ScratchCopies(settings.ray.scratch, inputs, storage) if copy else None
    try:
        readable = copies.inputs if copies else inputs  # read from the copies from here on
        breaks = copies.breaks if copies else {}  # copies of broken inputs end at the break
        units = plan_units(readable, settings.ray.split_bytes, storage)
        plan = {
            "units": units, "inputs": readable, "breaks": breaks, "storage": storage,
            "block_bytes": settings.ray.block_bytes, "spec": spec,
            "part_bytes": settings.ray.split_bytes,
            "write_args": {
                "target": target, "fmt_name": recipe.format, "files": spec.files,
                "val_fraction": settings.split.val_fraction, "dedup": recipe.dedup,
                "task_sorted": recipe.grouped,
            },
        }  # fmt: skip
        tasks = unit_tasks(readable, units, settings.ray.split_bytes, cluster_cpus())
        if recipe.grouped:
            statuses = grouped.statuses(tasks, plan, shuffle, settings)
        else:
            statuses = stream.statuses(tasks, plan)
        parts = []
        progress = Progress(settings.ray.progress_s, inputs, live_stream())
        try:
            for status in statuses:
                raise_if_stopped()  # (see gymray.errors.STOPS)
                if status is None:  # (nothing written)
                    continue
                key, raw = status
                if key == FAILED:
                    raise pickle.loads(raw)  # a worker's GymrayError, as it raised it
                parts.append(pickle.loads(raw))
                progress.add(parts[-1])
        finally:
            progress.close()
            statuses.close()  # cancels the tasks still running (a failed part, a stop)
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
    return pack(sizes, most) or [[]]


def pack(sizes: list[int], most: float) -> list[list[int]]:
    """The indexes of ``sizes`` in consecutive runs, in order: a run takes the next item
    while the run holds at most ``most`` together (an item larger than that, alone)."""
    runs: list[list[int]] = []
    held = 0
    for i, size in enumerate(sizes):
        if not runs or held + size > most:
            runs.append([])
            held = 0
        runs[-1].append(i)
        held += size
    return runs


TASKS_AT_LEAST = 16


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


class Progress:
    """A line now and then while the parts come in: lines, MB read and MB/s, records,
    elapsed. Logged every ``every`` seconds, for logs that have no progress bar (a Ray
    Job's, a pipeline's); and, where ``live`` is given (a terminal or notebook whose
    gymray log is not shown), redrawn in place every ``LIVE_S``, as a progress bar
    would be. Grouped recipes report once their records are built (the shuffle comes
    first), and without bytes read."""

    LIVE_S = 0.5

    def __init__(self, every: float, inputs: list[InputFile], live: TextIO | None = None):
        self.every, self.live = every, live
        # the % of bytes read means something only when they are the files' own sizes
        compressed = any(f.uri.endswith(".gz") for f in inputs)
        self.total = None if compressed else sum(f.size for f in inputs)
        self.start = self.last = self.drawn = time.monotonic()
        self.lines = self.records = self.bytes = 0
        self.shown = False

    def add(self, stats: Any) -> None:
        self.lines += stats.lines
        self.records += len(stats.records.get("nbytes", ()))
        self.bytes += stats.input_bytes
        now = time.monotonic()
        if self.every and now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now - self.start))
        if self.live is not None and now - self.drawn >= self.LIVE_S:
            self.drawn, self.shown = now, True
            self.live.write(f"\rgymray: {self.line(now - self.start)}")
            self.live.flush()

    def close(self) -> None:
        """The live line's last state, and a new line after it (once it was drawn)."""
        if self.shown:
            self.live.write(f"\rgymray: {self.line(time.monotonic() - self.start)}\n")
            self.live.flush()
            self.shown = False

    def line(self, seconds: float) -> str:
        read = ""
        if self.bytes:
            mb = self.bytes / 1e6
            share = f" of {self.total / 1e6:,.0f}" if self.total else ""
            read = f", {mb:,.0f}{share} MB read ({mb / max(seconds, 1e-3):,.0f} MB/s)"
        return f"progress: {self.lines:,} lines{read}, {self.records:,} records, {seconds:.0f} s"


def live_stream() -> TextIO | None:
    """Where to redraw a progress line: the driver's stderr, when it is a terminal or a
    notebook's and gymray's log lines are not shown there (the CLI shows them)."""
    interactive = "ipykernel" in sys.modules or sys.stderr.isatty()
    return sys.stderr if interactive and not log.isEnabledFor(logging.INFO) else None
