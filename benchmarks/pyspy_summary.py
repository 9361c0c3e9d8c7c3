#!/usr/bin/env python3
"""Summarize a ``py-spy record --subprocesses -f raw`` profile of a benchmark run.

    py-spy record -r 40 --subprocesses -f raw -o prof.txt -- \\
        python benchmarks/bench_sft.py --skip baseline --skip minimal --runs 2 --cli-runs 0 --no-save
    python benchmarks/pyspy_summary.py prof.txt [--top 25] [--rate 40]

Prints CPU samples per process role (driver, Ray workers, Ray's own Python
daemons), the functions where the samples are (self time) per role, and the
inclusive time of gymray's pipeline stages (``--stage NAME`` adds one).
"""

from __future__ import annotations

import argparse
import collections
import re

STAGES = [
    # worker side (engine/: per-block work; recipes/, rollouts, chat, formats: pure logic)
    "read_lines (gymray/engine/read.py",
    "_lines_table (gymray/engine/read.py",
    "process_lines (gymray/engine/blocks.py",
    "check_line (gymray/rollouts.py",
    "load_json (gymray/rollouts.py",
    "convert (gymray/rollouts.py",
    "prompt_messages (gymray/chat.py",
    "completion_messages (gymray/chat.py",
    "convert_tools (gymray/chat.py",
    "task_key_of (gymray/rollouts.py",
    "sft_record (gymray/recipes/sft.py",
    "unit_interval (gymray/rollouts.py",
    "OutcomeBuilder.add (gymray/engine/blocks.py",
    "encode (gymray/formats.py",
    "column_value (gymray/formats.py",
    "cut_raw (gymray/rollouts.py",
    "OutcomeBuilder.table (gymray/engine/blocks.py",
    "summarize_lines (gymray/engine/blocks.py",
    "parse_rollouts (gymray/engine/blocks.py",
    "decide_block (gymray/engine/blocks.py",
    "group_block (gymray/engine/blocks.py",
    "build_block (gymray/engine/blocks.py",
    "write_block (gymray/engine/write.py",
    "_fix_part (gymray/dataset/assemble.py",
    "_copy_at (gymray/dataset/assemble.py",
    # driver side
    "prepare (gymray/api.py",
    "plan_units (gymray/engine/read.py",
    "run (gymray/engine/graph.py",
    "decide (gymray/dataset/assemble.py",
    "assemble (gymray/dataset/assemble.py",
    "publish (gymray/dataset/publish.py",
    "fingerprint (gymray/dataset/manifest.py",
    "expand_inputs (gymray/storage/inputs.py",
]


def role(proc: str) -> str:
    if "default_worker.py" in proc or "ray::" in proc:
        return "ray worker"
    if "/ray/" in proc and ("dashboard" in proc or "monitor" in proc or "agent" in proc):
        return "ray daemon (python)"
    return "driver"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--rate", type=float, default=40.0, help="py-spy -r (samples/s)")
    ap.add_argument("--stage", action="append", default=[])
    a = ap.parse_args()
    stages = STAGES + a.stage
    per_role = collections.Counter()
    self_time: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    procs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in open(a.profile, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"^(.*) (\d+)$", line)
        if not m:
            continue
        stack, n = m.group(1), int(m.group(2))
        frames = stack.split(";")
        # --subprocesses prefixes the chain of processes (driver;raylet;worker;...)
        k = (
            max(i for i, f in enumerate(frames) if f.startswith("process "))
            if frames[0].startswith("process ")
            else 0
        )
        proc, frames = frames[k], frames[k:]
        r = role(proc)
        per_role[r] += n
        procs[r][proc[:90]] += n
        if len(frames) > 1:
            self_time[r][re.sub(r":\d+\)$", ")", frames[-1])] += n
        seen = set()
        for f in frames[1:]:
            for s in stages:
                if s not in seen and f.startswith(s):
                    seen.add(s)
                    incl[r][s.split(" (")[0]] += n
    total = sum(per_role.values())
    sec = 1.0 / a.rate
    print(f"total CPU samples {total} (~{total * sec:.1f} CPU s at {a.rate:g}/s)")
    for r, n in per_role.most_common():
        print(f"\n== {r}: {n} samples, ~{n * sec:.1f} CPU s ({100 * n / total:.0f}%)")
        print(f"   processes: {len(procs[r])}")
        print("   -- inclusive, gymray stages:")
        for s, k in sorted(incl[r].items(), key=lambda kv: -kv[1]):
            print(f"   {k * sec:7.2f} s  {100 * k / n:5.1f}%  {s}")
        print(f"   -- self time, top {a.top}:")
        for f, k in self_time[r].most_common(a.top):
            print(f"   {k * sec:7.2f} s  {100 * k / n:5.1f}%  {f[:140]}")


if __name__ == "__main__":
    main()
