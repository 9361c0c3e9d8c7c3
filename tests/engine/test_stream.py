"""Per-rollout recipes as plain Ray tasks (gymray.engine.stream): neither the driver nor
the workers import Ray Data for them, and a worker lost mid-task changes nothing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import orjson
import pytest
from support import REPO

from gymray.engine import stream
from gymray.engine.write import PartStats, Target, part_key, publish_hashes
from gymray.samples.generate import HERE, message, rollout, user

SAMPLE = str(HERE / "rollouts.jsonl")

# A driver of its own (this session's already imported Ray Data), on a Ray of its own
# (its workers are this driver's only), that runs an SFT prepare and then asks every
# worker it can lease what it has imported.
DRIVER = """
import json, sys, time
import ray
import gymray

ray.init(address="local", num_cpus=2, include_dashboard=False,
         object_store_memory=128 * 1024**2, log_to_driver=False)
algo = sys.argv[3]
extra = {"sft.reward_threshold": 0} if algo == "sft" else {}
ds = gymray.prepare(algo, input=sys.argv[1], output=sys.argv[2],
                    **{"split.val_fraction": 0, **extra})

@ray.remote(num_cpus=1)
def imported():
    time.sleep(0.5)  # both CPUs busy at once: the tasks take different workers
    return ["gymray.engine.stream" in sys.modules, "ray.data" in sys.modules,
            "pandas" in sys.modules, "omegaconf" in sys.modules, "gymray.config" in sys.modules]

workers = ray.get([imported.remote() for _ in range(4)])
print(json.dumps({"records": ds.counts["records"]["train"], "workers": workers,
                  "driver": ["ray.data" in sys.modules, "pandas" in sys.modules,
                             "pyarrow.compute" in sys.modules]}))
"""


@pytest.mark.parametrize("algo", ["sft", "dpo"])
def test_runs_import_neither_ray_data_nor_pandas(tmp_path, algo):
    """Ray Data's executor, actors and imports cost a CLI run on 2.9 GB of SFT 1.8 of its
    19.8 CPU-s; neither per-rollout runs nor grouped runs (their one sort is plain Ray
    tasks) need it. Nor pandas, which pyarrow imported in each worker (43 MiB, 0.13 CPU-s
    a worker: on gymray's first ``pa.array``, ``to_numpy`` or ``group_by``, or as Ray
    shipped an Arrow table a task returned) and in the driver (an empty split's Parquet
    file): see gymray.engine.arrays."""
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, SAMPLE, str(tmp_path / "o"), algo],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert seen["records"] > 0
    # (split.val_fraction=0: an empty val file); pyarrow.compute: 40 ms to import, for
    # the workers' Arrow calls only
    assert seen["driver"] == [False, False, False]
    ran_reads = [w for w in seen["workers"] if w[0]]
    assert ran_reads, f"no worker that ran a read task was leased again: {seen['workers']}"
    assert not any(w[1] for w in seen["workers"]), seen["workers"]
    assert not any(w[2] for w in ran_reads), seen["workers"]
    # nor the settings' code (OmegaConf, every algorithm's pydantic models: 0.1 CPU-s and
    # 75 modules a worker): a task gets the settings it reads, not the whole Settings
    assert not any(w[3] or w[4] for w in ran_reads), seen["workers"]


FAULTY = """
import os, signal, sys, threading
import ray
import gymray
sys.path.insert(0, "tests")
from support import processes_titled

ray.init(address="local", num_cpus=2, include_dashboard=False,
         object_store_memory=128 * 1024**2, log_to_driver=False)
run = {"sft.reward_threshold": 0, "ray.block_bytes": 4096, "ray.split_bytes": 1 << 20}
gymray.prepare("sft", input=sys.argv[1], output=sys.argv[2], **run)
killed, done = [], threading.Event()

def strike():
    # once, as soon as a worker runs a read task
    while not done.is_set():
        for pid in processes_titled(b"ray::read_and_write"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return

threading.Thread(target=strike, daemon=True).start()
gymray.prepare("sft", input=sys.argv[1], output=sys.argv[3], **run)
done.set()
print("struck", len(killed))
"""


def test_a_killed_read_task_is_run_again_and_changes_nothing(tmp_path):
    """A worker killed while it reads and writes (an OOM kill, a preempted node): Ray
    runs its task again, and the outputs equal a clean run's byte for byte."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        lines = [
            orjson.dumps(rollout([user(f"q{i}-{n}")], [message("a " * 150, "m")], 1.0))
            for n in range(2000)
        ]
        (src / f"r{i:02}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    args = [str(src), str(tmp_path / "clean"), str(tmp_path / "faulty")]
    p = subprocess.run([sys.executable, "-c", FAULTY, *args], capture_output=True, text=True,
                       cwd=REPO, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "struck 1" in p.stdout, p.stdout
    for name in ("train.jsonl", "val.jsonl", "filtered.jsonl", "rejects.jsonl"):
        assert (tmp_path / "clean" / name).read_bytes() == (
            tmp_path / "faulty" / name
        ).read_bytes(), name


def test_a_task_takes_the_content_hashes_of_the_parts_before_its_lines(tmp_path, monkeypatch):
    """Parts publish their records' content hashes; a task reading later lines loads
    those of the parts before its own (never after: their records are not earlier in
    the dataset), each file once, whole (one being written is not a part's yet)."""
    monkeypatch.setattr(stream, "REFRESH_S", 0.0)
    target = Target(str(tmp_path / "out"), str(tmp_path / "out" / ".staging"))
    target.prepare()
    fs = target.fs()

    def key(file_id: int, line: int) -> str:  # of a range unit from this line
        return stream.first_key((file_id, (0, 0, line - 1)))

    # ... the key its first part gets (a whole file's: from line 1)
    assert key(2, 7) == part_key({"task_hash": None, "file_id": 2, "line": 7, "sub": 0}, False)
    assert stream.first_key((2, None)) == key(2, 1)

    for k, hashes in ((key(0, 1), [1, 2]), (key(0, 500), [3]), (key(1, 1), [4, 5])):
        stats = PartStats(k)
        stats.records = {"content_hash": np.array(hashes, np.int64)}
        publish_hashes(fs, target, stats)
    with fs.open_output_stream(target.join(f"{target.hashes_dir}/{key(0, 2)}.i64.tmp")) as f:
        f.write(np.array([9], np.int64).tobytes())  # a part still being written

    seen = {7}
    earlier = stream.EarlierParts(target, seen)
    earlier.load(before=key(0, 500))  # a task starting at line 500 of file 0
    assert seen == {7, 1, 2}
    earlier.load(before=key(1, 300))
    assert seen == {7, 1, 2, 3, 4, 5}
    seen.discard(1)
    earlier.load(before=key(2, 1))
    assert 1 not in seen  # a file is loaded once

    mine = stream.EarlierParts(target, set())  # the task that wrote key(0, 1)'s part
    mine.written(key(0, 1))
    mine.load(before=key(1, 1))
    assert mine.seen == {3}  # its own part's hashes are not read back


def test_an_object_store_output_shares_no_hashes(tmp_path):
    """On an object store, listing and reading every part's hashes from every task
    would cost requests: workers drop only their own task's repeats there."""
    target = Target("s3://bucket/out", "bucket/out/.staging")
    local = Target(str(tmp_path / "o"), str(tmp_path / "o" / ".staging"))
    assert not target.shares_hashes and local.shares_hashes
    assert stream.earlier_parts(target, set()) is None
    assert isinstance(stream.earlier_parts(local, set()), stream.EarlierParts)
    assert stream.earlier_parts(local, None) is None
