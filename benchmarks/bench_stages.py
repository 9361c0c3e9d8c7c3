#!/usr/bin/env python3
"""Where gymray's per-rollout (SFT) CPU goes, stage by stage, in one process and without Ray.

    python benchmarks/bench_stages.py CORPUS_DIR [--set sft.reward_threshold=0] [--files K]

Runs the functions a Ray Data worker runs, one after the other, over the
corpus and times each (wall and CPU): the driver's read planning
(``engine.read.plan_units``), then per unit ``engine.read.read_lines`` ->
``engine.blocks.process_lines`` -> ``engine.write.write_block`` (the worker
writing its parts: JSONL + Parquet + listings).

The sum is the CPU gymray's work costs before Ray: compare it with the
benchmarks' single-process loops, and with gymray's measured CPU-seconds
(the rest is Ray: worker start-up, scheduling, object store, daemons) and
the driver's share (``plan_units`` sends its chunk summaries to Ray tasks).

Uses package internals, so it follows the package: when a signature changes,
this script needs the same change (the benchmarks proper use only
``gymray.prepare`` and the CLI).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


class Clock:
    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, wall: float, cpu_s: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu_s


class Stages:
    """gymray's per-rollout SFT work in this process, as a Ray worker runs it."""

    def __init__(self, corpus: Path, sets: list[str], files: int = 0):
        from gymray import recipes
        from gymray.config import load_settings
        from gymray.engine.blocks import Spec
        from gymray.engine.write import Target
        from gymray.recipes.base import Context
        from gymray.rollouts import file_environment
        from gymray.storage import expand_inputs

        self.out = tempfile.mkdtemp(prefix="gymray-stages-")
        self.settings = load_settings(
            "sft", [f"input={corpus}", f"output={os.path.join(self.out, 'ds')}", *sets]
        )
        inputs = expand_inputs(self.settings.input)
        self.inputs = inputs[:files] if files else inputs
        uris = [f.uri for f in self.inputs]
        recipe = recipes.get("sft")(self.settings, Context(uris))
        self.spec = Spec(recipe, uris, [file_environment(u) for u in uris])
        target = Target(self.settings.output, os.path.join(self.out, "staging"))
        os.makedirs(target.path)
        target.prepare()
        self.write_args = {
            "target": target, "fmt_name": recipe.format, "files": uris,
            "val_fraction": self.settings.split.val_fraction, "dedup": recipe.dedup,
            "task_sorted": False,
        }  # fmt: skip

    def run(self, clk: Clock) -> tuple[int, int, int]:
        """Plan, then per unit read -> process -> write a block at a time, timing
        each stage into ``clk``; returns (units, blocks, lines)."""
        from gymray.engine.blocks import process_lines
        from gymray.engine.read import plan_units, read_lines
        from gymray.engine.write import write_block

        P, C = time.perf_counter, time.process_time
        # 0. the driver's read plan (large local files are split into line-aligned ranges)
        t, c = P(), C()
        units = plan_units(self.inputs, self.settings.ray.split_bytes)
        clk.add(
            "0 plan_units (chunk summaries: Ray tasks in gymray, in-process here)", P() - t, C() - c
        )
        # 1-3 streamed block by block, as a worker sees them
        lines = nblocks = 0
        for fid, span in units:
            it = read_lines(self.inputs[fid], fid, self.settings.ray.block_bytes, None, span)
            while True:
                t, c = P(), C()
                b = next(it, None)
                clk.add("1 read_lines (read + split + Arrow lines table)", P() - t, C() - c)
                if b is None:
                    break
                lines += b.num_rows
                nblocks += 1
                t, c = P(), C()
                o = process_lines(b, self.spec)
                clk.add("2 process_lines (parse + recipe + outcome table)", P() - t, C() - c)
                t, c = P(), C()
                write_block(o, **self.write_args)
                clk.add("3 write_block (JSONL + Parquet + listing parts)", P() - t, C() - c)
        return len(units), nblocks, lines

    def close(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="gymray setting, e.g. sft.reward_threshold=0 (repeatable)")  # fmt: skip
    ap.add_argument("--files", type=int, default=0, help="only the first K files (0: all)")
    a = ap.parse_args()

    stages = Stages(a.corpus, a.set, a.files)
    clk = Clock()
    units, nblocks, lines = stages.run(clk)
    stages.close()
    summary = {
        "corpus": str(a.corpus),
        "settings": a.set,
        "files": len(stages.inputs),
        "units": units,
        "lines": lines,
        "bytes": sum(f.size for f in stages.inputs),
        "block_bytes": stages.settings.ray.block_bytes,
        "blocks": nblocks,
        "seconds": {k: round(v, 2) for k, v in sorted(clk.wall.items())},
        "cpu_seconds": {k: round(v, 2) for k, v in sorted(clk.cpu.items())},
        "sum_cpu_seconds_0_to_3": round(sum(v for k, v in clk.cpu.items() if k[0] in "0123"), 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
