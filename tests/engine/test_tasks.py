"""Read units packed into Ray tasks (gymray.engine.graph.unit_tasks): fewer tasks for
many small inputs, never two large units in one, and the same outputs either way."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest

import gymray
from gymray.engine.graph import TASKS_AT_LEAST, unit_tasks
from gymray.engine.read import GZIP_RATIO, plan_units
from gymray.samples.generate import message, rollout, user
from gymray.storage import InputFile, expand_inputs

MiB = 1 << 20


def files(sizes: list[int], suffix: str = ".jsonl") -> list[InputFile]:
    return [
        InputFile(f"/in/f{i}{suffix}", f"/in/f{i}{suffix}", size, 0) for i, size in enumerate(sizes)
    ]


def test_many_small_files_share_tasks_in_order():
    inputs = files([300_000] * 500, ".jsonl.gz")  # 500 x 1.8 MB of lines: 900 MB
    units = [(fid, None) for fid in range(len(inputs))]
    tasks = unit_tasks(inputs, units, 256 * MiB, cpus=2)
    assert [u for t in tasks for u in t] == list(range(500))  # each unit once, in order
    share = 500 * 300_000 * GZIP_RATIO / TASKS_AT_LEAST  # 2 CPUs show fewer than that
    assert all(len(t) * 300_000 * GZIP_RATIO <= share for t in tasks)
    assert TASKS_AT_LEAST <= len(tasks) <= TASKS_AT_LEAST * 1.1
    assert unit_tasks(inputs, units, 256 * MiB, cpus=0) == tasks  # a head without CPUs
    # more CPUs, more tasks (four a CPU); never more than the units
    per_task = 500 * 300_000 * GZIP_RATIO / 64 // (300_000 * GZIP_RATIO)  # 7 files
    assert len(unit_tasks(inputs, units, 256 * MiB, cpus=16)) == -(-500 // per_task) == 72
    assert len(unit_tasks(inputs, units, 256 * MiB, cpus=1000)) == 500


def test_large_units_keep_a_task_each():
    """Ranges of one large file (and files near ``split_bytes``) are never paired: a
    task of two would halve the tasks that balance the cores."""
    inputs = files([3500 * MiB])
    units = [(0, (k * 220 * MiB, (k + 1) * 220 * MiB, 0)) for k in range(16)]
    assert unit_tasks(inputs, units, 256 * MiB, cpus=2) == [[k] for k in range(16)]
    mixed = files([300 * MiB, 1000, 1000, 300 * MiB, 1000])
    units = [(fid, None) for fid in range(5)]
    assert unit_tasks(mixed, units, 256 * MiB, cpus=2) == [[0], [1, 2], [3], [4]]


def test_no_units_is_one_empty_task():
    assert unit_tasks([], [], 256 * MiB, cpus=2) == [[]]


def small_gz_files(d: Path, n: int) -> None:
    d.mkdir()
    for f in range(n):
        rows = [
            rollout([user(f"question {t}")], [message(f"answer {t}.{k} " + "x" * 300, "m")],
                    float(k % 2), agent="a", task=t, rollout_index=k)
            for t in range(f * 3, f * 3 + 3) for k in range(4)
        ]  # fmt: skip
        (d / f"r{f:03d}.jsonl.gz").write_bytes(gzip.compress(b"".join(
            orjson.dumps(r) + b"\n" for r in rows)))  # fmt: skip


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("algo", ["sft", "dpo"])
def test_packed_tasks_write_what_a_task_a_file_writes(tmp_path, algo):
    import ray

    small_gz_files(tmp_path / "in", 60)
    inputs = expand_inputs([str(tmp_path / "in")])
    units = plan_units(inputs, 256 * MiB)
    cpus = int(ray.cluster_resources()["CPU"])
    assert len(unit_tasks(inputs, units, 256 * MiB, cpus)) <= 40  # packed
    assert len(unit_tasks(inputs, units, 1024, cpus)) == 60  # a .gz is one unit: alone

    def run(name: str, split: int) -> dict:
        res = gymray.prepare(algo, input=str(tmp_path / "in"), output=str(tmp_path / name),
                             **{"ray.split_bytes": split, "sft.reward_threshold": 0})  # fmt: skip
        out = Path(res.output)
        got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.jsonl")}
        if algo == "dpo":  # a grouped recipe's Parquet files are one per task-hash range
            got |= {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in (out / "parquet").rglob("*.parquet")}  # fmt: skip
        return {"counts": res.counts, "files": got}

    packed, alone = run("packed", 256 * MiB), run("alone", 1024)
    assert packed["counts"]["input_lines"] == 60 * 12
    assert packed["counts"]["records"]["train"] > 0
    assert packed == alone
