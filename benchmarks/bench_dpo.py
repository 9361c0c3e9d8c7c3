#!/usr/bin/env python3
"""DPO benchmark: ``gymray.prepare("dpo")`` on Ray vs a single-process orjson loop.

    python benchmarks/bench_dpo.py [--tasks 250000] [--repeats 4] [--max-line-bytes 2048] ...

The issue's size is 1M rollouts (250k tasks x 4). With make_corpus.py's real
templates (~17.5 KB a line) that is ~17 GB, too much for a 2-core box in one
sitting, so by default the corpus is built by ``make_small_corpus.py``: the
same generator (same tasks, order, rewards) with every template's long strings
cut to fit ``--max-line-bytes`` (default 2048: ~2 GB for 1M rollouts), and
with distinct completions per rollout (make_corpus copies one template K
times, and DPO never pairs identical completions). ``--max-line-bytes 0``
builds the full-size lines; ``--tasks`` makes it smaller.

In one run (Ray started first, not timed):

* gymray: ``gymray.prepare("dpo", input=CORPUS, output=TMP, overwrite=True)``;
  reported as "not available" while the DPO recipe is not implemented;
* baseline: one process: read, split on ``b"\\n"``, ``parse_line`` (orjson.loads
  + conversion), a dict grouping rollouts by task key, best-vs-worst pairing
  with ``min_gap`` 0.2 (gymray's ``recipes.dpo.dpo_pairs`` with default
  ``DPOSettings()`` when it exists, so both make the same pairs; else a plain
  best-vs-worst here), ``orjson.dumps`` of each pair into one train.jsonl.
  Same work minus Ray, minus Parquet, minus the train/val split.

Prints and saves a JSON summary (``benchmarks/results/dpo-<date>.json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_RATIO = 1.0  # the issue: at least as fast as the single-process loop
AIM_RATIO = 1.3  # and its aim
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- baseline
def _own_pairs(members, min_gap: float, chat):
    """Best vs worst of a task's usable rollouts when the reward gap is >= min_gap
    (used only while gymray has no DPO recipe)."""
    from gymray.recipes.common import GroupResult, meta_of

    from gymray.recipes.sft import complete_conversation

    result = GroupResult()
    usable = []
    for m in members:
        messages = complete_conversation(m.rollout, chat)
        if isinstance(messages, str):
            result.drop(m, messages)
        else:
            usable.append((m, messages))
    if len(usable) < 2:
        for m, _ in usable:
            result.drop(m, "single_rollout_task")
        return result
    best = max(usable, key=lambda u: (u[0].rollout.reward, -u[0].index))
    worst = min(usable, key=lambda u: (u[0].rollout.reward, u[0].index))
    n = len(best[0].rollout.prompt)
    gap = best[0].rollout.reward - worst[0].rollout.reward
    if gap < min_gap or best[1][n:] == worst[1][n:]:
        for m, _ in usable:
            result.drop(m, "gap_below_min" if gap < min_gap else "identical_completions")
        return result
    record = {
        "context": best[1][:n],
        "completions": [
            {"rank": 0, "completion": best[1][n:]},
            {"rank": 1, "completion": worst[1][n:]},
        ],
        "meta": {
            **meta_of(best[0].rollout, [best[0].source, worst[0].source]),
            "reward_gap": gap,
        },
    }
    result.use(best[0])
    result.use(worst[0])
    for m, _ in usable:
        result.drop(m, "not_best_or_worst")
    result.records.append((record, best[0].index))
    return result


def baseline(corpus: Path, out_dir: Path) -> dict:
    """The single-process loop; runs in its own interpreter (see ``--_baseline``)."""
    import orjson
    from gymray.recipes.common import Member

    from gymray.config import ChatSettings, DPOSettings
    from gymray.rollouts import Reject, parse_line
    from gymray.storage import expand_inputs

    dpo, chat = DPOSettings(), ChatSettings()
    try:
        from gymray.recipes.dpo import DPORecipe

        class OnePass(DPORecipe):
            """gymray's DPO recipe as one process runs it: with every rollout in
            memory, each one's (context, completion) is computed once, not
            again when its pair's record is built."""

            def __call__(self, members):
                self.memo = {}
                return super().__call__(members)

            def candidate(self, m):
                if m.index not in self.memo:
                    self.memo[m.index] = super().candidate(m)
                return self.memo[m.index]

        one_pass = OnePass(dpo, chat)

        def pairs(members):
            return one_pass(members)

        recipe = "gymray.recipes.dpo.DPORecipe(DPOSettings(), ChatSettings()), candidates memoized per task"
    except ImportError:

        def pairs(members):
            return _own_pairs(members, dpo.min_gap, chat)

        recipe = f"benchmark's own best-vs-worst, min_gap {dpo.min_gap}"

    t0 = time.perf_counter()
    inputs = expand_inputs([str(corpus)])
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
            r.request, r.extras = {}, {}  # not needed for pairing (gymray drops them too)
            g = groups.setdefault(r.task_key, [])
            g.append(Member(r, f.uri, n, len(g)))
        del lines
    t_grouped = time.perf_counter()
    records = []
    for members in groups.values():
        result = pairs(members)
        for m in members:
            status, reason = result.status.get(m.index, ("filtered", "unused"))
            if status == "used":
                counts["used"] += 1
            else:
                filtered[reason] += 1
        records.extend(orjson.dumps(rec) + b"\n" for rec, _ in result.records)
    counts["records"] = len(records)
    with open(out_dir / "train.jsonl", "wb") as w:
        w.write(b"".join(records))
    seconds = time.perf_counter() - t0
    counts["filtered"] = dict(sorted(filtered.items()))
    counts["rejected"] = dict(sorted(rejected.items()))
    return {
        "seconds": round(seconds, 2),
        "parse_and_group_seconds": round(t_grouped - t0, 2),
        "pair_and_write_seconds": round(seconds - (t_grouped - t0), 2),
        "tasks": len(groups),
        "recipe": recipe,
        "input_bytes": nbytes,
        "counts": counts,
        "peak_rss_gib": round(C.max_rss_self() / C.GIB, 3),
        "cpu_seconds": round(C.own_cpu_seconds(), 1),
        "train": str(out_dir / "train.jsonl"),
    }


# --------------------------------------------------------------------------- gymray
def run_gymray(corpus: Path, out: Path, a: argparse.Namespace) -> dict:
    import gymray

    kwargs: dict = {"input": str(corpus), "output": str(out), "overwrite": True}
    ray_settings = {}
    if a.block_bytes:
        ray_settings["block_bytes"] = a.block_bytes
    if a.partitions:
        ray_settings["partitions"] = a.partitions
    if ray_settings:
        kwargs["ray"] = ray_settings
    if a.shuffle_aggregator_cpus is not None:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.hash_shuffle_operator_actor_num_cpus_override = a.shuffle_aggregator_cpus
    with C.MemorySampler(a.sample_interval) as mem:
        t0 = time.perf_counter()
        try:
            result = gymray.prepare("dpo", **kwargs)
        except NotImplementedError as e:
            return {"available": False, "why": f"NotImplementedError: {e}"}
        seconds = time.perf_counter() - t0
    return {
        "available": True,
        "seconds": round(seconds, 2),
        "counts": result.counts,
        "memory": mem.summary(),
        "memory_timeline": [
            [t, round(rss / C.GIB, 2), round(store / C.GIB, 2)]
            for t, rss, store in mem.timeline[:: max(1, len(mem.timeline) // 120)]
        ],
        "paths": result.paths,
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
    ap.add_argument("--partitions", type=int, default=None, help="gymray ray.partitions")
    ap.add_argument(
        "--shuffle-aggregator-cpus",
        type=float,
        default=None,
        help="Ray Data DataContext.hash_shuffle_operator_actor_num_cpus_override, set in "
        "this driver before prepare (default: Ray Data's, 25%% of the cluster's CPUs split "
        "over the aggregators; on 2 CPUs that leaves room for one map task at a time)",
    )
    C.common_args(ap)
    ap.add_argument("--_baseline", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a._baseline:
        print(json.dumps(baseline(Path(a._baseline[0]), Path(a._baseline[1]))))
        return 0

    make_args = [
        "--tasks", str(a.tasks), "--repeats", str(a.repeats), "--shards", str(a.shards),
        "--seed", str(a.seed), "--bad-fraction", str(a.bad_fraction),
    ]  # fmt: skip
    small = a.max_line_bytes or not a.same_completions
    if small:
        make_args += ["--max-line-bytes", str(a.max_line_bytes)]
        if not a.same_completions:
            make_args.append("--distinct-completions")
        generator = [sys.executable, str(HERE / "make_small_corpus.py")]
    else:
        generator = None  # make_corpus.py itself
    name = (
        f"dpo-t{a.tasks}-r{a.repeats}-s{a.shards}-x{a.seed}-b{a.bad_fraction}"
        f"-m{a.max_line_bytes}{'-same' if a.same_completions else ''}"
    )
    corpus = a.data_dir / "corpora" / name
    print(f"corpus {corpus} ...", file=sys.stderr, flush=True)
    made = C.build_corpus(corpus, make_args, make_corpus=generator)
    files = C.rollout_files(corpus)
    nbytes = sum(p.stat().st_size for p in files)
    warm = C.warm_page_cache(files)
    run_dir = a.data_dir / "runs" / f"dpo-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "benchmark": "dpo",
        "corpus": {
            "path": str(corpus),
            "generator": made.get("generator"),
            "make_corpus_args": make_args,
            "files": len(files),
            "lines": made["lines"],
            "bad_lines": made.get("bad_lines", 0),
            "bytes": nbytes,
            "gib": round(nbytes / C.GIB, 3),
            "mean_line_bytes": round(nbytes / max(1, made["lines"])),
            "reused": made["reused"],
            "page_cache_warm_seconds": round(warm, 1),
            "note": "issue size is 1M rollouts (250k tasks x 4) of make_corpus.py lines "
            "(~17 GB); lines shrunk to --max-line-bytes unless it is 0",
        },
    }
    try:
        import ray  # noqa: F401  (also puts Ray's vendored psutil on sys.path)

        summary["ray"] = C.start_ray(a.num_cpus, a.object_store_gib, a.worker_niceness)
        summary["environment"] = C.environment()
        summary["data_context"] = C.apply_data_context(a.data_context)

        g_runs, b_runs = [], []
        unavailable = None
        for i in range(a.runs):
            if a.skip != "gymray" and unavailable is None:
                print(f"[{i + 1}/{a.runs}] gymray.prepare('dpo') ...", file=sys.stderr, flush=True)
                g = run_gymray(corpus, run_dir / "gymray", a)
                if not g["available"]:
                    unavailable = {"available": False, "why": g["why"]}
                else:
                    g_runs.append(C.with_gymray_load(g))
            if a.skip != "baseline":
                b_runs.append(
                    C.run_baseline(
                        Path(__file__).resolve(), corpus, run_dir / "baseline", i, a.runs
                    )
                )
        g = C.best_of(g_runs) if g_runs else None
        b = C.best_of(b_runs) if b_runs else None
        if unavailable:
            summary["gymray"] = unavailable
        elif g:
            summary["gymray"] = {
                "available": True,
                "seconds": g["seconds"],
                **C.rate(nbytes, made["lines"], g["seconds"]),
                "runs": len(g_runs),
                "all_seconds": g["all_seconds"],
                "median_seconds": g["median_seconds"],
                "block_bytes": a.block_bytes or "default",
                "partitions": a.partitions or "default (from input size)",
                "shuffle_aggregator_cpus": a.shuffle_aggregator_cpus
                if a.shuffle_aggregator_cpus is not None
                else "default (Ray Data)",
                "counts": g["counts"],
                "memory": g["memory"],
                "peak_memory_gib": max(r["memory"]["peak_rss_sum_gib"] for r in g_runs),
                "peak_pss_sum_gib": C.max_pss(g_runs),
                "load": g["load"],
                "load_all_runs": [r["load"]["other_processes_cores_busy"] for r in g_runs],
            }
        if b:
            summary["baseline"] = {
                "what": "single process: read, split(b'\\n'), parse_line (orjson.loads + "
                "conversion), dict grouping by task key, best-vs-worst pairing (min_gap 0.2), "
                "orjson.dumps to one train.jsonl; no Ray, no Parquet, no train/val split, "
                "no rejects/filtered listings, no manifest/report",
                "recipe": b["recipe"],
                "seconds": b["seconds"],
                **C.rate(nbytes, made["lines"], b["seconds"]),
                "runs": len(b_runs),
                "all_seconds": b["all_seconds"],
                "median_seconds": b["median_seconds"],
                "parse_and_group_seconds": b["parse_and_group_seconds"],
                "pair_and_write_seconds": b["pair_and_write_seconds"],
                "process_wall_seconds": b["process_wall_seconds"],
                "tasks": b["tasks"],
                "counts": b["counts"],
                "peak_memory_gib": max(r["peak_rss_gib"] for r in b_runs),
                "load": b["load"],
                "load_all_runs": [r["load"]["other_processes_cores_busy"] for r in b_runs],
            }
        C.judge(summary, g, b, g_runs, not a.no_compare, TARGET_RATIO, AIM_RATIO)
    finally:
        if not a.keep_output:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            summary["output_dir"] = str(run_dir)
    C.save(summary, "dpo", a.tag, a.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
