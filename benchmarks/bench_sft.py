#!/usr/bin/env python3
"""SFT benchmark: ``gymray.prepare("sft")`` on Ray vs a single-process orjson loop.

    python benchmarks/bench_sft.py [--tasks 20000] [--repeats 4] [--shards 8] ...

Builds (or reuses) a corpus with ``/work/shared/bench/make_corpus.py``, starts
Ray (not timed), then in one run times:

* gymray: ``gymray.prepare("sft", input=CORPUS, output=TMP, overwrite=True)``,
  JSONL + Parquet + rejects/filtered listings + manifest + report;
* baseline: one process, a plain loop over the same files: read, split on
  ``b"\\n"``, ``gymray.rollouts.check_line`` (orjson.loads), the reward filter, ``convert`` (chat conversion),
  ``gymray.recipes.sft.sft_record`` with default ``SFTSettings()`` /
  ``ChatSettings()``, the same content-hash dedup, ``orjson.dumps`` of each
  record into one train.jsonl (+ filtered.jsonl). Same work minus Ray, minus
  Parquet, minus the train/val split.

Checks both give the same counts and the same multiset of JSONL lines, and
prints / saves a JSON summary (``benchmarks/results/sft-<date>.json``).
See benchmarks/README.md.
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

TARGET_RATIO = 1.5


# --------------------------------------------------------------------------- baseline
def baseline(corpus: Path, out_dir: Path) -> dict:
    """The single-process loop; runs in its own interpreter (see ``--_baseline``)."""
    import orjson

    from gymray.config import ChatSettings, SFTSettings
    from gymray.recipes.sft import sft_record
    from gymray.rollouts import Reject, check_line, convert, cut_raw, task_key_of
    from gymray.storage import expand_inputs

    sft, chat = SFTSettings(), ChatSettings()
    content_key = C.dedup_key()
    t0 = time.perf_counter()
    inputs = expand_inputs([str(corpus)])  # same files, same source names as gymray
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"input_lines": 0, "used": 0, "records": 0}
    filtered: collections.Counter = collections.Counter()
    rejected: collections.Counter = collections.Counter()
    seen: set[int] = set()
    nbytes = 0
    with (
        open(out_dir / "train.jsonl", "wb") as train,
        open(out_dir / "filtered.jsonl", "wb") as filt,
        open(out_dir / "rejects.jsonl", "wb") as rej,
    ):
        for f in inputs:
            with open(f.path, "rb") as fh:
                data = fh.read()
            nbytes += len(data)
            lines = data.split(b"\n")
            del data
            if lines and not lines[-1]:
                lines.pop()
            name = os.path.basename(f.uri)
            recs, filts, rejs = [], [], []
            for n, raw in enumerate(lines, 1):
                counts["input_lines"] += 1
                # The same early reward filter gymray applies: no chat conversion
                # for lines below the threshold (a fair baseline would do it too).
                checked = check_line(raw)
                if (
                    not isinstance(checked, Reject)
                    and sft.reward_threshold is not None
                    and checked.reward < sft.reward_threshold
                ):
                    filtered["below_reward_threshold"] += 1
                    task = task_key_of(checked.obj, checked.request, name)[0]
                    filts.append(
                        orjson.dumps(
                            {
                                "file": f.uri,
                                "line": n,
                                "reason": "below_reward_threshold",
                                "task": task,
                            }
                        )
                        + b"\n"
                    )
                    continue
                r = (
                    checked
                    if isinstance(checked, Reject)
                    else convert(checked, name, chat.reasoning)
                )
                if isinstance(r, Reject):
                    rejected[r.reason] += 1
                    text, length = cut_raw(raw)
                    rejs.append(
                        orjson.dumps(
                            {
                                "file": f.uri,
                                "line": n,
                                "reason": r.reason,
                                "field": r.field,
                                "detail": r.detail,
                                "raw_length": length,
                                "raw": text,
                            }
                        )
                        + b"\n"
                    )
                    continue
                record, reason = sft_record(r, (f.uri, n), sft, chat)
                if record is not None:
                    h, line = content_key(record, r.tools)
                    if sft.dedup and h in seen:
                        record, reason = None, "duplicate"
                if record is None:
                    filtered[reason] += 1
                    filts.append(
                        orjson.dumps(
                            {"file": f.uri, "line": n, "reason": reason, "task": r.task_key}
                        )
                        + b"\n"
                    )
                    continue
                if sft.dedup:
                    seen.add(h)
                counts["used"] += 1
                recs.append(line)
            del lines
            counts["records"] += len(recs)
            train.write(b"".join(recs))
            filt.write(b"".join(filts))
            rej.write(b"".join(rejs))
    seconds = time.perf_counter() - t0
    counts["filtered"] = dict(sorted(filtered.items()))
    counts["rejected"] = dict(sorted(rejected.items()))
    return {
        "seconds": round(seconds, 2),
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
    if a.block_bytes:
        kwargs["ray"] = {"block_bytes": a.block_bytes}
    with C.MemorySampler(a.sample_interval) as mem:
        t0 = time.perf_counter()
        result = gymray.prepare("sft", **kwargs)
        seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 2),
        "counts": result.counts,
        "memory": mem.summary(),
        "memory_timeline": _thin(mem.timeline, 120),
        "paths": result.paths,
    }


def _thin(timeline: list, n: int) -> list:
    step = max(1, len(timeline) // n)
    return [
        [t, round(rss / C.GIB, 2), round(store / C.GIB, 2)] for t, rss, store in timeline[::step]
    ]


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20000, help="make_corpus.py --tasks")
    ap.add_argument("--repeats", type=int, default=4, help="make_corpus.py --repeats")
    ap.add_argument("--bad-fraction", type=float, default=0.0, help="make_corpus.py --bad-fraction")
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
    name = f"sft-t{a.tasks}-r{a.repeats}-s{a.shards}-x{a.seed}-b{a.bad_fraction}"
    corpus = a.data_dir / "corpora" / name
    print(f"corpus {corpus} ...", file=sys.stderr, flush=True)
    made = C.build_corpus(corpus, make_args)
    files = C.rollout_files(corpus)
    nbytes = sum(p.stat().st_size for p in files)
    warm = C.warm_page_cache(files)
    run_dir = a.data_dir / "runs" / f"sft-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "benchmark": "sft",
        "corpus": {
            "path": str(corpus),
            "make_corpus_args": make_args,
            "files": len(files),
            "lines": made["lines"],
            "bad_lines": made.get("bad_lines", 0),
            "bytes": nbytes,
            "gib": round(nbytes / C.GIB, 3),
            "reused": made["reused"],
            "page_cache_warm_seconds": round(warm, 1),
        },
    }
    try:
        import ray  # noqa: F401  (also puts Ray's vendored psutil on sys.path)

        summary["ray"] = C.start_ray(a.num_cpus, a.object_store_gib, a.worker_niceness)
        summary["environment"] = C.environment()
        summary["data_context"] = C.apply_data_context(a.data_context)

        g_runs, b_runs = [], []
        for i in range(a.runs):
            if a.skip != "gymray":
                print(f"[{i + 1}/{a.runs}] gymray.prepare('sft') ...", file=sys.stderr, flush=True)
                g_runs.append(C.with_gymray_load(run_gymray(corpus, run_dir / "gymray", a)))
            if a.skip != "baseline":
                b_runs.append(
                    C.run_baseline(
                        Path(__file__).resolve(), corpus, run_dir / "baseline", i, a.runs
                    )
                )
        g = C.best_of(g_runs) if g_runs else None
        b = C.best_of(b_runs) if b_runs else None
        if g:
            peak = max(r["memory"]["peak_rss_sum_gib"] for r in g_runs)
            summary["gymray"] = {
                "seconds": g["seconds"],
                **C.rate(nbytes, made["lines"], g["seconds"]),
                "runs": len(g_runs),
                "all_seconds": g["all_seconds"],
                "median_seconds": g["median_seconds"],
                "block_bytes": a.block_bytes or "default (gymray RaySettings.block_bytes)",
                "counts": g["counts"],
                "memory": g["memory"],
                "peak_memory_gib": peak,
                "peak_pss_sum_gib": C.max_pss(g_runs),
                "load": g["load"],
                "load_all_runs": [r["load"]["other_processes_cores_busy"] for r in g_runs],
            }
        if b:
            summary["baseline"] = {
                "what": "single process: read, split(b'\\n'), parse_line (orjson.loads + "
                "conversion), sft_record (default SFTSettings/ChatSettings), content-hash "
                "dedup, orjson.dumps to one train.jsonl (+ filtered.jsonl); no Ray, no "
                "Parquet, no train/val split, no manifest/report",
                "seconds": b["seconds"],
                **C.rate(nbytes, made["lines"], b["seconds"]),
                "runs": len(b_runs),
                "all_seconds": b["all_seconds"],
                "median_seconds": b["median_seconds"],
                "process_wall_seconds": b["process_wall_seconds"],
                "counts": b["counts"],
                "peak_memory_gib": max(r["peak_rss_gib"] for r in b_runs),
                "load": b["load"],
                "load_all_runs": [r["load"]["other_processes_cores_busy"] for r in b_runs],
            }
        C.judge(summary, g, b, g_runs, not a.no_compare, TARGET_RATIO)
    finally:
        if not a.keep_output:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            summary["output_dir"] = str(run_dir)
    C.save(summary, "sft", a.tag, a.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
