#!/usr/bin/env python3
"""DPO benchmark: gymray (``gymray.prepare`` in a connected driver, and
``python -m gymray.run`` end to end) on a running Ray head vs a single-process
loop, in one run.

    python benchmarks/bench_dpo.py [--tasks 250000] [--repeats 4] [--max-line-bytes 2048] ...

The issue's size is 1M rollouts (250k tasks x 4). make_corpus.py's real
templates average ~18 KB a line (~17 GB at 1M rollouts), so by default the
corpus is built by ``make_small_corpus.py``: the same generator (same tasks,
order, rewards) with long strings cut to fit ``--max-line-bytes`` (default
2048: ~3.7 GB for 1M rollouts) and a distinct completion per rollout (DPO never
pairs identical completions). ``--max-line-bytes 0 --same-completions`` is
make_corpus.py unchanged.

The single-process loop (``--_baseline``, its own process): read, split on
``b"\\n"``, ``gymray.rollouts.parse_line``, a dict grouping rollouts by task key,
gymray's DPO recipe class (``gymray.recipes.dpo.DPO``, the settings the CLI
would use) run the way one process holding every rollout would (each rollout's
candidate computed once per task), ``orjson.dumps`` of each pair into one
train.jsonl. Its lines must equal gymray's train + val (checked).

See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_sft import import_pure_modules  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = {  # issue 12, on a 2-core machine, 1M rollouts
    "wall_vs_full_min": 1.6,
    "cpu_vs_full_max": 1.3,
    "driver_share_max": 0.03,
    "cli_over_warm_prepare_max": 1.3,
}


# --------------------------------------------------------------------------- baseline
def baseline(corpus: Path, out_dir: Path, sets: list[str]) -> dict:
    """The single-process loop; runs in its own interpreter (``--_baseline``)."""
    t_start, c_start = time.perf_counter(), time.process_time()
    import_pure_modules()
    import os

    import orjson

    from gymray.config import load_settings
    from gymray.recipes.base import Context, Member
    from gymray.recipes.dpo import DPO
    from gymray.rollouts import Reject, parse_line
    from gymray.storage import expand_inputs

    settings = load_settings("dpo", sets)  # the settings the CLI would use
    chat = settings.chat

    class OnePass(DPO):
        """gymray's DPO recipe as one process holding every rollout runs it: each
        rollout's (context, completion) is computed once per task, not again
        when its pair's record is built (gymray reads those lines back)."""

        def __call__(self, members):
            self.memo = {}
            return super().__call__(members)

        def candidate(self, m):
            if m.index not in self.memo:
                self.memo[m.index] = super().candidate(m)
            return self.memo[m.index]

    import_seconds = time.perf_counter() - t_start
    t0, c0 = time.perf_counter(), time.process_time()
    inputs = expand_inputs([str(corpus)])  # same files, same source names as gymray
    recipe = OnePass(settings, Context([f.uri for f in inputs]))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"input_lines": 0, "used": 0, "records": 0}
    filtered: collections.Counter = collections.Counter()
    rejected: collections.Counter = collections.Counter()
    groups: dict[str, list] = {}
    nbytes = 0
    for f in inputs:
        with open(f.path, "rb") as fh:
            data = fh.read()
        nbytes += len(data)
        lines = data.split(b"\n")
        del data
        if lines and not lines[-1]:
            lines.pop()
        name = os.path.basename(f.uri)
        for n, raw in enumerate(lines, 1):
            counts["input_lines"] += 1
            r = parse_line(raw, name, chat.reasoning)
            if isinstance(r, Reject):
                rejected[r.reason] += 1
                continue
            r.request, r.extras = {}, {}  # not needed for pairs (gymray drops them too)
            g = groups.setdefault(r.task_key, [])
            g.append(Member(r, f.uri, n, len(g)))
        del lines
    t_grouped = time.perf_counter()
    records = []
    for members in groups.values():
        result = recipe(members)
        for m in members:
            status, reason = result.status.get(m.index, ("filtered", "unused"))
            if status == "used":
                counts["used"] += 1
            else:
                filtered[reason] += 1
        records.extend(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
                       for rec, _ in result.records)  # fmt: skip
    counts["records"] = len(records)
    with open(out_dir / "train.jsonl", "wb") as w:
        w.write(b"".join(records))
    seconds = time.perf_counter() - t0
    counts["filtered"] = dict(sorted(filtered.items()))
    counts["rejected"] = dict(sorted(rejected.items()))
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),
        "import_seconds": round(import_seconds, 2),
        "import_cpu_seconds": round(c0 - c_start, 2),
        "parse_and_group_seconds": round(t_grouped - t0, 2),
        "pair_and_write_seconds": round(seconds - (t_grouped - t0), 2),
        "tasks": len(groups),
        "input_bytes": nbytes,
        "counts": counts,
        "train": str(out_dir / "train.jsonl"),
    }


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", type=int, default=250000, help="tasks in the corpus")
    ap.add_argument("--repeats", type=int, default=4, help="rollouts per task")
    ap.add_argument("--bad-fraction", type=float, default=0.0, help="make_corpus --bad-fraction")
    ap.add_argument(
        "--max-line-bytes",
        type=int,
        default=2048,
        help="shrink template lines to about this many bytes (0: make_corpus.py's full lines, "
        "~17 GB at 1M rollouts)",
    )
    ap.add_argument(
        "--same-completions",
        action="store_true",
        help="keep make_corpus's identical completions per task (DPO then makes no pairs)",
    )
    C.common_args(ap)
    ap.add_argument("--_baseline", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--_sets", nargs="*", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a._baseline:
        print(json.dumps(baseline(Path(a._baseline[0]), Path(a._baseline[1]), a._sets)))
        return 0

    make_args = [
        "--tasks", str(a.tasks), "--repeats", str(a.repeats), "--shards", str(a.shards),
        "--seed", str(a.seed), "--bad-fraction", str(a.bad_fraction),
    ]  # fmt: skip
    generator = None  # make_corpus.py itself
    if a.max_line_bytes or not a.same_completions:
        make_args += ["--max-line-bytes", str(a.max_line_bytes)]
        if not a.same_completions:
            make_args.append("--distinct-completions")
        generator = [sys.executable, str(HERE / "make_small_corpus.py")]
    name = (
        f"dpo-t{a.tasks}-r{a.repeats}-s{a.shards}-x{a.seed}-b{a.bad_fraction}"
        f"-m{a.max_line_bytes}{'-same' if a.same_completions else ''}"
    )
    corpus = a.data_dir / "corpora" / name
    C.say(f"corpus {corpus} ...")
    made = C.build_corpus(corpus, make_args, generator=generator)
    cases = [{"name": f"dpo {made['lines'] // 1000}k rollouts", "slug": "dpo", "sets": []}]

    def baseline_cmd(c: dict, out: Path) -> list[str]:
        return [sys.executable, str(HERE / "bench_dpo.py"), "--_baseline", str(corpus), str(out),
                "--_sets", *c["sets"], *a.set]  # fmt: skip

    t0 = time.time()
    raw, head = C.run_suite(a, "dpo", corpus, cases, baseline_cmd)
    summary = C.summary("dpo", t0, raw, head, corpus, made, make_args, TARGETS, cases)
    for s in summary["cases"].values():
        s["targets_met"] = {
            k: {
                "wall_vs_full>=1.6": rt["wall_vs_full"] is not None
                and rt["wall_vs_full"] >= TARGETS["wall_vs_full_min"],
                "cpu_vs_full<=1.3": rt["cpu_vs_full"] is not None
                and rt["cpu_vs_full"] <= TARGETS["cpu_vs_full_max"],
                "driver_share<=3%": rt["driver_share"] is not None
                and rt["driver_share"] <= TARGETS["driver_share_max"],
            }
            | C.memory_verdict(s[k.split("_")[0]][k.split("_")[1]])
            | (C.cold_verdict(s, TARGETS["cli_over_warm_prepare_max"]) if k == "cli_cold" else {})
            for k, rt in s["ratios"].items()
            if k != "cli_over_warm_prepare"
        }
    C.say("\n" + C.table(summary))
    C.save(summary, f"dpo-{made['lines'] // 1000}k", a.tag, a.no_save, a.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
