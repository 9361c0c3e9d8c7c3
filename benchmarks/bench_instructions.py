#!/usr/bin/env python3
"""Per-record CPU of gymray vs the two SFT loops, in instructions (valgrind), not seconds.

    python benchmarks/bench_instructions.py CORPUS_DIR [--mib 32] [--set sft.reward_threshold=0]
    python benchmarks/bench_instructions.py DPO_CORPUS_DIR --algo dpo

This machine is a VM whose speed switches between levels ~45% apart every few
seconds (the host's load is counted as our CPU time), so CPU-seconds ratios
from one benchmark run move by a third from the next (bench_sft's map workers:
34 vs 46 CPU-s for the same work in two consecutive runs, the loops unchanged).
Instructions executed do not depend on that. This script takes the first
``--mib`` MiB, and the first 2x ``--mib`` MiB, of whole lines of the corpus's
first file, and runs on each, in its own interpreter under
``valgrind --tool=callgrind``:

* gymray: what a Ray worker runs for them (``bench_stages.Stages``: plan,
  ``read_lines`` -> ``process_lines`` -> ``write_block``: JSONL, Parquet, listings);
* full: bench_sft.py's full single-process loop (the CPU target's baseline);
* minimal: minimal_sft.py (the wall-clock target's floor).

A side's cost per line is the difference between its two runs over the
difference in lines: the interpreter, imports, set-up and one-time
initialisation (3.6 G instructions for gymray's side, 1.8 G for the full loop's)
cancel out, so the ratios are those of a long run. Ray's own costs (worker start-up,
scheduling, daemons, the driver) are not in it: those are bench_sft.py's
``cpu_seconds_by_role``. Needs ``valgrind``; ~4 min at the default 32 MiB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

SIDES = {"sft": ("gymray", "full", "minimal"), "dpo": ("dpo-gymray", "dpo-full")}


def dpo_in_process(corpus: Path, out: Path, sets: list[str]) -> None:
    """gymray's DPO on one core, as its Ray graph runs it with ``ray.shuffle=keys``
    (engine/graph.py): summarize every line, decide per task, sort the decisions, read
    the used lines back by offset, build and write the records; one range, no Ray."""
    import pyarrow as pa

    from gymray import recipes
    from gymray.config import load_settings
    from gymray.engine.blocks import SORT_KEYS, Spec, build_block, decide_block, summarize_lines
    from gymray.engine.read import plan_units, read_lines
    from gymray.engine.write import Target, write_block
    from gymray.recipes.base import Context
    from gymray.rollouts import file_environment
    from gymray.storage import expand_inputs

    settings = load_settings("dpo", [f"input={corpus}", f"output={out / 'ds'}", *sets])
    inputs = expand_inputs(settings.input)
    uris = [f.uri for f in inputs]
    recipe = recipes.get("dpo")(settings, Context(uris))
    spec = Spec(recipe, uris, [file_environment(u) for u in uris])
    target = Target(settings.output, str(out / "staging"))
    os.makedirs(target.path)
    target.prepare()
    keys = [
        summarize_lines(lines, spec)
        for fid, span in plan_units(inputs, settings.ray.split_bytes)
        for lines in read_lines(inputs[fid], fid, settings.ray.block_bytes, None, span)
    ]
    decided = decide_block(pa.concat_tables(keys), spec)
    decided = decided.sort_by([(k, "ascending") for k in SORT_KEYS])
    write_block(
        build_block(decided, spec, inputs), target=target, fmt_name=recipe.format, files=uris,
        val_fraction=settings.split.val_fraction, dedup=recipe.dedup, task_sorted=True,
    )  # fmt: skip


def side(name: str, corpus: Path, out: Path, sets: list[str]) -> None:
    """One side's run over ``corpus``, imports and set-up included."""
    if name == "dpo-gymray":
        dpo_in_process(corpus, out, sets)
    elif name == "dpo-full":
        import bench_dpo

        bench_dpo.baseline(corpus, out, sets)
    elif name == "gymray":
        import bench_stages

        stages = bench_stages.Stages(corpus, sets)
        stages.run(bench_stages.Clock())
        stages.close()
    elif name == "full":
        import bench_sft

        bench_sft.baseline(corpus, out, sets)
    else:
        import minimal_sft

        threshold = next(
            (float(s.split("=", 1)[1]) for s in sets if s.startswith("sft.reward_threshold=")),
            None,
        )
        minimal_sft.run(str(corpus), str(out / "out.jsonl"), threshold)


def ratios(per_line: dict[str, int]) -> dict[str, float]:
    """Every side's cost per line against every later one's."""
    names = list(per_line)
    return {
        f"{x.removeprefix('dpo-')}_vs_{y.removeprefix('dpo-')}": round(per_line[x] / per_line[y], 3)
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    }


def callgrind(args: list[str]) -> int:
    """Instructions executed by ``python <this script> args`` under callgrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, str(Path(__file__).resolve()), *args]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode or not found:
        raise SystemExit(f"callgrind failed ({p.returncode}): {p.stderr[-2000:]}")
    return int(found.group(1))


def sample(corpus: Path, mib: int, into: Path) -> tuple[int, int]:
    """The first ``mib`` MiB of whole lines of the corpus's first file, as a corpus."""
    first = sorted(p for p in corpus.iterdir() if p.name.endswith(".jsonl"))[0]
    with open(first, "rb") as f:
        data = f.read(mib << 20)
    data = data[: data.rfind(b"\n") + 1]
    (into / first.name).write_bytes(data)
    return data.count(b"\n"), len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", type=Path, nargs="?")
    ap.add_argument("--algo", choices=sorted(SIDES), default="sft",
                    help="sft (gymray, full and minimal loops) or dpo (gymray, bench_dpo's loop)")  # fmt: skip
    ap.add_argument("--mib", type=int, default=32, help="MiB of lines, and twice that (default 32)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="gymray setting for the gymray and full sides (repeatable)")  # fmt: skip
    ap.add_argument("--tag", default="", help="suffix of the result file in benchmarks/results/")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--_side", nargs=3, metavar=("SIDE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._side:
        side(a._side[0], Path(a._side[1]), Path(a._side[2]), a.set)
        return 0
    if a.corpus is None:
        ap.error("CORPUS_DIR is required (e.g. the SFT corpus bench_sft.py builds under "
                 "DATA/corpora/)")  # fmt: skip
    if shutil.which("valgrind") is None:
        ap.error("valgrind is not installed (apt-get install valgrind)")

    sides = SIDES[a.algo]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="gymray-instr-") as tmp:
        samples = {}
        for size in (a.mib, 2 * a.mib):
            corpus = Path(tmp) / f"corpus-{size}"
            corpus.mkdir()
            samples[size] = (corpus, *sample(a.corpus, size, corpus))
        if samples[2 * a.mib][1] <= samples[a.mib][1]:
            raise SystemExit(
                f"the corpus's first file ends before {a.mib} MiB: use a smaller --mib"
            )
        sets = [x for s in a.set for x in ("--set", s)]
        jobs = {}
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for name in sides:
                for size, (corpus, _, _) in samples.items():
                    out = Path(tmp) / f"{name}-{size}"
                    out.mkdir()
                    args = ["--_side", name, str(corpus), str(out), *sets]
                    jobs[name, size] = pool.submit(callgrind, args)
        counts = {k: f.result() for k, f in jobs.items()}
    small, large = samples[a.mib], samples[2 * a.mib]
    lines = large[1] - small[1]
    per_line = {n: round((counts[n, 2 * a.mib] - counts[n, a.mib]) / lines) for n in sides}
    result = {
        "benchmark": "instructions",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_seconds": round(time.time() - t0),
        "environment": C.environment(),
        "corpus": str(a.corpus),
        "samples": {str(size): {"lines": n, "bytes": b} for size, (_, n, b) in samples.items()},
        "settings": a.set,
        "instructions": {n: {str(size): counts[n, size] for size in samples} for n in sides},
        # what the first run costs beyond its lines at that rate: interpreter, imports,
        # set-up, one-time initialisation
        "fixed": {n: counts[n, a.mib] - per_line[n] * small[1] for n in sides},
        "per_line": per_line,
        "ratios": ratios(per_line),
    }
    C.save(result, "instructions" if a.algo == "sft" else f"instructions-{a.algo}", a.tag,
           a.no_save)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
