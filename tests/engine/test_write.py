"""A worker writing one block's parts (engine/write.py), on real files: what it writes,
what it tells the driver, and a failure it hands back instead of raising."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gymray import formats
from gymray.engine.outcomes import OutcomeBuilder
from gymray.engine.write import FAILED, Target, _task_stats, part_key, write_block
from gymray.errors import StorageError


def record(text: str, line: int) -> dict:
    return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
            "tools": [], "meta": {"source": f"f.jsonl:{line}"}}  # fmt: skip


def block() -> OutcomeBuilder:
    out = OutcomeBuilder(formats.get("openai"), dedup=True)
    rows = [("used", "a", 0.9), ("used", "b", 0.1), ("filtered", None, 0.2),
            ("rejected", None, None), ("used", "c", 0.95)]  # fmt: skip
    for line, (status, text, u) in enumerate(rows, start=1):
        if status == "used":
            out.add(0, line, status, record=record(text, line), reward=1.0, task_key=f"t{line}",
                    env="e", split_u=u, task_hash=line)  # fmt: skip
        elif status == "filtered":
            out.add(0, line, status, reason="below_reward_threshold", reward=0.0, env="e",
                    task_hash=line)  # fmt: skip
        else:
            out.add(0, line, status, reason="invalid_json", field="(line)", detail="bad",
                    raw=b"{nope", env="e")  # fmt: skip
    return out


def kwargs(target: Target) -> dict:
    return {"target": target, "fmt_name": "openai", "files": ["f.jsonl"], "val_fraction": 0.5,
            "dedup": True, "task_sorted": False}  # fmt: skip


def test_a_block_becomes_parts_and_one_status(tmp_path):
    target = Target(str(tmp_path), str(tmp_path))
    target.prepare()
    key, raw = write_block(block(), **kwargs(target))
    stats = pickle.loads(raw)
    assert stats.key == key == part_key({"task_hash": 1, "file_id": 0, "line": 1, "sub": 0}, False)
    assert (stats.lines, stats.used) == (5, 3)
    assert stats.filtered == {"below_reward_threshold": 1}
    assert stats.rejected == {"invalid_json": 1}
    parts = tmp_path / target.parts
    train = (parts / f"{key}.train.jsonl").read_bytes().splitlines()
    val = (parts / f"{key}.val.jsonl").read_bytes().splitlines()
    # split_u < val_fraction goes to val; lines are the records as encoded, in order
    assert [orjson.loads(x)["messages"][1]["content"] for x in train] == ["a", "c"]
    assert [orjson.loads(x)["messages"][1]["content"] for x in val] == ["b"]
    assert stats.records["is_val"].tolist() == [False, True, False]
    assert stats.records["nbytes"].tolist() == [len(train[0]) + 1, len(val[0]) + 1,
                                                len(train[1]) + 1]  # fmt: skip
    rejects = [orjson.loads(x) for x in (parts / f"{key}.rejects.jsonl").read_bytes().splitlines()]
    assert [(r["file"], r["line"], r["reason"]) for r in rejects] == [
        ("f.jsonl", 4, "invalid_json")
    ]
    filtered = (parts / f"{key}.filtered.jsonl").read_bytes().splitlines()
    assert [(orjson.loads(x)["line"], orjson.loads(x)["reason"]) for x in filtered] == [
        (3, "below_reward_threshold")
    ]
    # a recipe that drops duplicates stages its records as Arrow IPC: they become
    # Parquet once the driver knows which are duplicates of other blocks' records
    assert not (tmp_path / target.parquet("train", key)).exists()
    with pa.ipc.open_file(tmp_path / target.arrow("train", key)) as f:
        table = f.read_all()
    assert table.num_rows == 2 and table.schema.equals(formats.get("openai").parquet_schema())
    assert [orjson.loads(m)[1]["content"] for m in table.column("messages").to_pylist()] == [
        "a",
        "c",
    ]


def test_a_recipe_that_keeps_duplicates_writes_parquet_at_once(tmp_path):
    target = Target(str(tmp_path), str(tmp_path))
    target.prepare()
    key, _ = write_block(block(), **{**kwargs(target), "dedup": False})
    table = pq.read_table(tmp_path / target.parquet("train", key))
    assert table.num_rows == 2 and table.schema.equals(formats.get("openai").parquet_schema())
    assert not (tmp_path / target.arrow("train", key)).exists()


def test_a_retry_writes_under_other_names(tmp_path):
    first, retry = (
        Target(str(tmp_path), str(tmp_path)),
        Target(str(tmp_path), str(tmp_path), attempt=1),
    )
    assert first.parts != retry.parts
    assert first.parquet("train", "k") != retry.parquet("train", "k")


def test_part_names_sort_like_their_rows():
    rows = [{"task_hash": h, "file_id": f, "line": n, "sub": s}
            for h in (-(2**63), -5, 0, 7, 2**63 - 1) for f in (0, 3) for n in (1, 2**40)
            for s in (0, 2)]  # fmt: skip
    for sorted_by_task in (True, False):
        unique = {  # a row is one (file, line, sub)
            ((r["task_hash"],) if sorted_by_task else ()) + (r["file_id"], r["line"], r["sub"]): r
            for r in rows
        }
        order = [unique[k] for k in sorted(unique)]
        keys = [part_key(r, sorted_by_task) for r in order]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_an_output_the_worker_cannot_see_comes_back_as_a_failed_status(tmp_path):
    target = Target(str(tmp_path), str(tmp_path / "not-prepared"))  # no probe file there
    key, raw = write_block(block(), **kwargs(target))
    assert key == FAILED
    error = pickle.loads(raw)
    assert isinstance(error, StorageError) and "is not visible from Ray node" in str(error)
    assert not (tmp_path / "not-prepared").exists()


def test_the_driver_gets_no_python_object_a_line(tmp_path):
    """What a part tells the driver grows with its lines: rows read from Arrow hold a
    string object each, and content hashes are None where a recipe keeps duplicates.
    Sent as they were, the driver held ~1.2M objects (~108 MiB) for DPO's 1M lines,
    and grouped the rewards by environment in a Python loop step a line."""
    for dedup in (True, False):
        out = OutcomeBuilder(formats.get("openai"), dedup=dedup)
        for line in range(1, 41):
            env = "math" if line % 2 else "code"
            out.add(0, line, "used", record=record(f"r{line}", line), reward=line / 40,
                    task_key=f"t{line}", env=env, split_u=0.9, task_hash=line,
                    note="long" if line % 4 == 0 else None)  # fmt: skip
        table = out.table()  # what the grouped path writes from: an Arrow block
        target = Target(str(tmp_path / str(dedup)), str(tmp_path / str(dedup)))
        target.prepare()
        _, raw = write_block(table, **{**kwargs(target), "task_sorted": True, "dedup": dedup})
        stats = pickle.loads(raw)
        # environments as codes into the part's list of them, a line's and a record's
        assert stats.envs == ["math", "code"]
        assert stats.reward_env.dtype == stats.records["env"].dtype == np.int32
        assert stats.reward_env.tolist() == [(n + 1) % 2 for n in range(1, 41)]
        assert stats.records["env"].tolist() == stats.reward_env.tolist()
        assert len({id(n) for n in stats.records["notes"] if n is not None}) == 1
        arrays = {k: v for k, v in stats.records.items() if k != "notes"}
        assert [k for k, v in arrays.items() if v.dtype == object] == []
        assert ("content_hash" in arrays) is dedup  # (decided on only where duplicates go)


def test_task_stats_are_arrows_group_by_in_numpy():
    """Per task: rollouts, reward sum, min and max, as Arrow's group_by gave them (which
    imports pandas in the worker): the same floats, tasks in hash order, rows of a task
    apart from each other included, rows without a status or a reward left out."""
    rng = np.random.default_rng(0)
    n = 5000
    hashes = rng.integers(-(2**63), 2**63 - 1, 300, dtype=np.int64)[rng.integers(0, 300, n)]
    rewards = [None if i % 11 == 0 else float(v) for i, v in enumerate(rng.normal(size=n))]
    status = [None if i % 13 == 0 else "used" for i in range(n)]
    t = pa.table({"task_hash": hashes, "reward": pa.array(rewards, pa.float64()),
                  "status": pa.array(status, pa.string())})  # fmt: skip
    got_hashes, got = _task_stats(t)
    rows = t.filter(pc.and_(pc.is_valid(t["status"]), pc.is_valid(t["reward"])))
    g = (rows.group_by("task_hash")
         .aggregate([("reward", f) for f in ("count", "sum", "min", "max")])
         .sort_by("task_hash"))  # fmt: skip
    assert got_hashes.tolist() == g["task_hash"].to_pylist()
    for i, f in enumerate(("count", "sum", "min", "max")):
        assert got[:, i].tolist() == g[f"reward_{f}"].to_pylist(), f  # equal floats
    assert _task_stats(t.slice(0, 0))[1].shape == (0, 4)
