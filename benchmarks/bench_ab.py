#!/usr/bin/env python3
"""Two gymray commits, CLI runs interleaved on one machine: what a code change is worth.

    python benchmarks/bench_ab.py BASE [NEW] [--rounds 3] [--set sft.reward_threshold=0]
    python benchmarks/bench_ab.py BASE [NEW] --algo dpo --corpus DIR  (bench_dpo.py's corpus)

This machine's speed moves by up to ~45% within minutes (benchmarks/README.md), so
two ``bench_sft.py`` runs minutes apart cannot tell a 10% change. Here each commit
(``git worktree`` of this repository, imported through ``PYTHONPATH`` by the CLI and,
through Ray's copy of the driver's ``sys.path``, by its workers) has its own running
Ray head; every round runs ``python -m gymray.run ALGO ... --prepare-only`` once
per commit, in alternating order, then the minimal SFT loop once: each pair ran
seconds apart. The result: per run wall, CPU-seconds of the driver and the head's
processes (by role), and the ratios NEW / BASE and minimal / NEW round by round.

``NEW`` defaults to the working tree (uncommitted changes included). The corpus is
``bench_sft.py``'s (built the same way when missing), or ``--corpus``: one another
benchmark built, such as ``bench_dpo.py``'s for DPO (its pairs need that corpus's distinct
completions). Needs nothing outside this repository and ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("base", help="the commit to compare against (any git revision)")
    ap.add_argument("new", nargs="?", default=None, help="default: the working tree")
    ap.add_argument("--rounds", type=int, default=3, help="CLI runs per commit")
    ap.add_argument("--algo", default="sft")
    ap.add_argument("--tasks", type=int, default=40000, help="make_corpus.py --tasks")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="a corpus another benchmark built (its directory, with corpus.json), "
                    "e.g. bench_dpo.py's, in place of bench_sft.py's")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a gymray setting for every run, e.g. sft.reward_threshold=0")  # fmt: skip
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--data-dir", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-save", action="store_true")
    return ap.parse_args(argv)


def checkout(rev: str | None, into: Path) -> tuple[Path, str]:
    """A worktree of ``rev`` (the repository itself for the working tree), and its name."""
    if rev is None:
        head = subprocess.run(["git", "-C", str(C.REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(C.REPO), "status", "--porcelain", "gymray"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        return C.REPO, head + ("+changes" if dirty else "")
    sha = subprocess.run(["git", "-C", str(C.REPO), "rev-parse", "--short", rev],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    path = into / sha
    subprocess.run(["git", "-C", str(C.REPO), "worktree", "add", "-q", "--detach", str(path), sha],
                   check=True)  # fmt: skip
    return path, sha


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.corpus is None:
        corpus, make_args = C.sft_corpus(a.data_dir, a.tasks, shards=a.shards)
        C.say(f"corpus {corpus} ...")
        made = C.build_corpus(corpus, make_args)
    else:
        corpus, made = a.corpus.resolve(), json.loads((a.corpus / "corpus.json").read_text())
        made, make_args = {**made, "reused": True}, made["args"]
    trees = Path(tempfile.mkdtemp(prefix="gymray-ab-"))
    sides: dict[str, dict] = {}
    heads: list[C.RayHead] = []
    try:
        for key, rev in (("base", a.base), ("new", a.new)):
            path, name = checkout(rev, trees)
            head = C.RayHead(a.num_cpus, None, 0)
            heads.append(head)
            # the head's raylet and its workers import this side's gymray first
            head.extra_env = {"PYTHONPATH": str(path)}
            sides[key] = {"name": name, "path": path, "head": head, "start": head.start(),
                          "runs": []}  # fmt: skip
            C.say(f"{key}: {name} on a head at {head.address}")
        minimal: list[dict] = []
        logs = a.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = a.data_dir / "ab-output"
        for r in range(a.rounds):
            for key in ("base", "new") if r % 2 == 0 else ("new", "base"):
                s = sides[key]
                head = s["head"]
                env = {**head.env(), "RAY_ADDRESS": head.address}
                cmd = [sys.executable, "-m", "gymray.run", a.algo, f"input={corpus}",
                       f"output={out}", "overwrite=true", *a.set, "--prepare-only", "--json"]  # fmt: skip
                time.sleep(2)
                run = C.run_child(cmd, role="driver", head=head, env=env, after=1.0,
                                  log=logs / f"ab-{key}.log")  # fmt: skip
                if not run["result"].get("ok"):
                    raise RuntimeError(f"{key} run failed: {run['result']}")
                s["runs"].append(C.side(run))
                C.say(f"round {r + 1} {key}: {run['wall_seconds']} s, "
                      f"{run['measures']['cpu_seconds']} CPU-s")  # fmt: skip
            if a.algo == "sft":
                thr = [x.split("=", 1)[1] for x in a.set if x.startswith("sft.reward_threshold=")]
                cmd = [sys.executable, str(HERE / "minimal_sft.py"), str(corpus),
                       str(a.data_dir / "ab-minimal.jsonl"), "--reward-threshold",
                       thr[-1] if thr else "0.95"]  # fmt: skip
                time.sleep(2)
                run = C.run_child(cmd, role="baseline")
                minimal.append({"wall_seconds": run["wall_seconds"],
                                "cpu_seconds": run["process_cpu_seconds"]})  # fmt: skip
                C.say(f"round {r + 1} minimal loop: {run['wall_seconds']} s")
        C._clean(out)
    finally:
        for head in heads:
            head.stop()
        for s in sides.values():
            if s["path"] != C.REPO:
                subprocess.run(["git", "-C", str(C.REPO), "worktree", "remove", "--force",
                                str(s["path"])], check=False)  # fmt: skip
    summary = {
        "benchmark": "bench_ab",
        "argv": sys.argv[1:],
        "environment": C.environment(),
        "corpus": C.corpus_info(corpus, made, make_args),
        "sides": {k: {"commit": s["name"], "runs": s["runs"]} for k, s in sides.items()},
        "minimal_loop": minimal,
        "summary": compare(sides, minimal),
    }
    C.save(summary, f"ab-{a.algo}", a.tag, a.no_save, a.data_dir)
    print(json.dumps(summary["summary"], indent=1))
    return 0


def compare(sides: dict, minimal: list[dict]) -> dict:
    """Per round, NEW / BASE wall and CPU, and how fast each side ran against the
    minimal loop of its round; the medians."""
    rows = []
    for r, (b, n) in enumerate(zip(sides["base"]["runs"], sides["new"]["runs"], strict=True)):
        row = {"wall_new_over_base": C.ratio(n["wall_seconds"], b["wall_seconds"]),
               "cpu_new_over_base": C.ratio(n["cpu_seconds"], b["cpu_seconds"])}  # fmt: skip
        if r < len(minimal):
            m = minimal[r]["wall_seconds"]
            row["base_speed_vs_minimal"] = C.ratio(m, b["wall_seconds"])
            row["new_speed_vs_minimal"] = C.ratio(m, n["wall_seconds"])
        rows.append(row)
    medians = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    by_role = {
        k: {role: round(statistics.median(run["cpu_seconds_by_role"].get(role, 0.0)
                                          for run in s["runs"]), 2)  # fmt: skip
            for role in sorted({x for run in s["runs"] for x in run["cpu_seconds_by_role"]})}
        for k, s in sides.items()
    }  # fmt: skip
    return {"rounds": rows, "medians": medians, "median_cpu_seconds_by_role": by_role}


if __name__ == "__main__":
    sys.exit(main())
