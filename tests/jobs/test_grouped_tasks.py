"""How a grouped recipe's run spreads its work, read from Ray's state API on the
session's real head (tests/jobs/conftest.py): parsing, the heavy part, in as many tasks
as a per-rollout run reads in, whatever the sort needs."""

from __future__ import annotations

import gzip
import sys
from collections import Counter

from ray_head import job_tasks, run_prepare_job

from gymray.samples.generate import HERE

SAMPLE = HERE / "rollouts.jsonl"


def test_a_grouped_run_parses_in_as_many_tasks_as_a_per_rollout_run_reads(
    client, client_env, tmp_path
):
    """40 small files: SFT reads them in its read tasks (at least 16: a cluster larger
    than it shows); DPO parses them in as many tasks, though its sort cuts its pieces in
    fewer (a piece must be large enough for the object store). Parsing capped at the
    sort's task count would leave a large cluster's cores idle for most of the run."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(40):
        (inputs / f"rollouts-{i:02d}.jsonl").write_bytes(SAMPLE.read_bytes())
    counts = {}
    for algo in ("sft", "dpo"):
        argv = [sys.executable, "-m", "gymray.run", algo, "--prepare-only",
                f"input={inputs}", f"output={tmp_path / algo}"]  # fmt: skip
        sid, _ = run_prepare_job(client, argv, f"tasks-{algo}")
        counts[algo] = Counter(t.name for t in job_tasks(client, client_env, sid))
    reads = counts["sft"]["read_and_write"]
    assert reads >= 16, counts["sft"]
    assert counts["dpo"]["parse_blocks"] == reads, counts["dpo"]
    assert 0 < counts["dpo"]["split_ranges"] < reads, counts["dpo"]
    assert counts["dpo"]["group_range"] >= 1, counts["dpo"]


def test_one_large_gz_is_cut_into_several_split_tasks(client, client_env, tmp_path):
    """A .gz is read whole, by one parse task. Its parsed blocks go to split tasks
    SPLIT_BLOCKS at a time, as they come: one split task that took them all held all the
    file's rollouts (a 560 MB .gz: 2.5 GiB in one worker). 3.3 MB of lines in 64 KiB
    blocks is ~50 blocks: 7 split tasks, each with a piece of 512 KiB or more."""
    from gymray.engine.read import SPLIT_BLOCKS

    big = tmp_path / "rollouts.jsonl.gz"
    with gzip.open(big, "wb", compresslevel=1) as f:
        f.write(SAMPLE.read_bytes() * 100)
    argv = [sys.executable, "-m", "gymray.run", "dpo", "--prepare-only", f"input={big}",
            f"output={tmp_path / 'out'}", "ray.block_bytes=65536", "ray.partitions=1"]  # fmt: skip
    sid, _ = run_prepare_job(client, argv, "tasks-one-gz")
    counts = Counter(t.name for t in job_tasks(client, client_env, sid))
    assert counts["parse_blocks"] == 1, counts
    blocks = -(-len(SAMPLE.read_bytes()) * 100 // 65536)
    assert counts["split_ranges"] >= blocks // SPLIT_BLOCKS >= 6, counts
