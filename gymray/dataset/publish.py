"""After the workers: decide, assemble, count, report, commit."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from gymray import formats
from gymray.dataset import assemble, stats
from gymray.dataset.html import render_html
from gymray.dataset.html_examples import choose_examples
from gymray.dataset.manifest import described, recorded_settings, versions
from gymray.dataset.report import render
from gymray.engine.graph import RunResult, cluster_cpus
from gymray.engine.stopping import get_all
from gymray.engine.write import Target
from gymray.errors import GymrayError
from gymray.histogram import reward_summary
from gymray.recipes.base import Outcome, Recipe
from gymray.storage import InputFile, Staging, join
from gymray.storage.failures import writing

EXAMPLES = 3  # in report.md (cut there); report.html shows whole records
# Records are read for the reports from the head of train.jsonl and val.jsonl: at most
# this many bytes of each, whole lines only, and at most HEAD_RECORDS records.
EXAMPLE_BYTES = 4 << 20
HEAD_RECORDS = 200


def publish(
    staging: Staging,
    target: Target,
    result: RunResult,
    recipe: Recipe,
    settings: Any,
    inputs: list[InputFile],
    tasks: list[InputFile],
    fingerprint: str,
    output: str,
) -> dict:
    """Turn the parts under ``target`` into the dataset and commit it; return the
    manifest now at the output (this one, or an identical one another run published)."""
    # On an object store the final files go straight to the output prefix: make sure
    # no other run took it over while the workers wrote.
    staging.check_owner()
    parts = result.parts
    fmt = formats.get(recipe.format)
    started = time.monotonic()
    plan = assemble.decide(parts, recipe.dedup, settings.split.val_fraction)
    get_all(
        assemble.assemble(target, assemble.listings(parts, plan, target), staging.remote)
        + assemble.write_parquet(target, parts, plan, recipe.dedup, cluster_cpus())
    )
    assembled = time.monotonic() - started
    parquet = assemble.parquet_files(target, parts)
    for split, files in parquet.items():
        if not files:
            files.append(assemble.write_empty_parquet(target, split, fmt.parquet_schema()))
    assemble.remove_parts(target, parquet)

    run = stats.merge(parts, plan)
    counts = run.counts
    if not counts.reconciles():
        raise GymrayError(f"internal error: counts do not reconcile: {counts.as_dict()}")
    per_file = stats.file_counts(run.per_file, [f.uri for f in inputs])
    outcome = Outcome(
        counts.as_dict(), recipe.format, run.per_task, dict(sorted(run.notes.items()))
    )
    sections, recipe_warnings = recipe.explain(outcome)
    warnings = list(recipe_warnings)
    warnings += stats.dead_file_warnings(per_file, [f.uri for f in inputs])
    if plan.moved_task:
        warnings.append(
            "no task fell in val by hash; the task nearest the split boundary was moved to val"
        )
    val = "val.jsonl" if counts.records["val"] else None
    stat_block = {
        "notes": dict(sorted(run.notes.items())),
        "seconds": {"read_and_write": round(result.seconds, 3), "assemble": round(assembled, 3)},
        "parts": len(parts),
        # records the workers wrote before the driver's duplicate decisions (a repeat
        # a worker saw coming was not written): how much the decisions had left to drop
        "part_records": sum(len(p.records.get("nbytes", ())) for p in parts),
    }
    if result.shuffle:
        stat_block["shuffle"] = result.shuffle
    reward = reward_summary(run.rewards)  # the run's bins serve every environment too
    manifest = {
        "algo": settings.algo,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": recipe.format,
        "output": output,
        "fingerprint": fingerprint,
        "inputs": described(inputs),
        "tasks_files": described(tasks),
        "settings": recorded_settings(settings),
        "counts": counts.as_dict(),
        "tasks": plan.tasks,
        "tools_differ": plan.tools_differ,
        "files": {
            "train": "train.jsonl",
            "val": val,
            "parquet": parquet,
            "rejects": "rejects.jsonl",
            "filtered": "filtered.jsonl",
            "report": "report.md",
            "report_html": "report.html",
        },
        "reward": reward,
        "stats": stat_block,
        "per_file": per_file,
        "environments": stats.environments(run, formats.CHARS_PER_TOKEN, reward),
        "lengths": stats.lengths(run, formats.CHARS_PER_TOKEN),
        "record_values": stats.values(run, recipe.value_name),
        "warnings": warnings,
        "versions": versions(),
        "nemo_rl": fmt.data_config(
            join(output, "train.jsonl"),
            join(output, val) if val else None,
            {"tools_differ": plan.tools_differ},
        ),
    }
    records = _first_records(target, HEAD_RECORDS)
    with writing(output, "report.md"), staging.open("report.md") as f:
        f.write(render(manifest, records[:EXAMPLES], warnings, sections).encode())
    with writing(output, "report.html"), staging.open("report.html") as f:
        f.write(render_html(manifest, choose_examples(records), sections).encode())
    return staging.commit(manifest)


def _first_records(target: Target, n: int) -> list[dict]:
    """The first records of the dataset, for the report (a bounded read)."""
    out: list[dict] = []
    fs = target.fs()
    for name in ("train.jsonl", "val.jsonl"):
        with fs.open_input_file(target.join(name)) as f:
            head = f.read(EXAMPLE_BYTES)
        for line in head.split(b"\n")[:-1]:  # the last piece may be a cut line
            if len(out) < n:
                out.append(orjson.loads(line))
    return out
