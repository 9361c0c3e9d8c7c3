"""The outcome table, and duplicates: what a block can drop itself equals what the
driver drops across blocks."""

from __future__ import annotations

import orjson
import pyarrow.parquet as pq
import pytest
from support import read_jsonl

import gymray
from gymray import formats
from gymray.engine import outcomes
from gymray.engine.outcomes import OutcomeBuilder
from gymray.samples.generate import _msg, rollout, user, write_jsonl


def record(text: str, source: int) -> dict:
    # provenance differs record to record; dedup looks at content only
    return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
            "meta": {"source": f"f.jsonl:{source}"}}  # fmt: skip


@pytest.mark.parametrize("in_order", [True, False])
def test_a_block_in_order_files_its_own_repeats_as_duplicates(in_order):
    out = OutcomeBuilder(formats.get("openai"), dedup=True, in_order=in_order)
    for line, text in enumerate(["a", "b", "a", "a"], start=1):
        out.add(0, line, "used", record=record(text, line), reward=1.0, task_key="t", env="e",
                note="a note")  # fmt: skip
    statuses = list(zip(out.get("status"), out.get("reason"), strict=True))
    if in_order:
        assert statuses == [("used", None), ("used", None),
                            ("filtered", "duplicate"), ("filtered", "duplicate")]  # fmt: skip
        assert [r is None for r in out.get("record")] == [False, False, True, True]
        assert out.get("note") == ["a note", "a note", None, None]  # a dropped record's notes go
    else:  # the driver decides, from every block's hashes
        assert statuses == [("used", None)] * 4
        assert out.get("content_hash")[0] == out.get("content_hash")[2]
    assert out.get("reward") == [1.0] * 4  # the line keeps its reward either way


def test_records_whose_content_was_seen_earlier_are_duplicates(monkeypatch):
    """``seen``: content hashes of records earlier in the dataset (the task's earlier
    blocks, other tasks' written parts). Its repeats are dropped; new content joins it,
    up to MAX_SEEN hashes (then a block drops only its own; the driver, the rest)."""
    earlier = OutcomeBuilder(formats.get("openai"), dedup=True, in_order=True)
    earlier.add(0, 1, "used", record=record("a", 1))
    seen = {earlier.get("content_hash")[0]}
    out = OutcomeBuilder(formats.get("openai"), dedup=True, in_order=True, seen=seen)
    for line, text in enumerate(["a", "b", "b"], start=2):
        out.add(0, line, "used", record=record(text, line))
    assert out.get("status") == ["filtered", "used", "filtered"]
    assert out.get("reason") == ["duplicate", None, "duplicate"]
    assert len(seen) == 2  # "b" joined it, for the blocks after this one

    monkeypatch.setattr(outcomes, "MAX_SEEN", 2)
    full = OutcomeBuilder(formats.get("openai"), dedup=True, in_order=True, seen=seen)
    for line, text in enumerate(["c", "c", "b"], start=5):
        full.add(0, line, "used", record=record(text, line))
    assert full.get("status") == ["used", "filtered", "filtered"]  # the block's own still go
    assert len(seen) == 2
    later = OutcomeBuilder(formats.get("openai"), dedup=True, in_order=True, seen=seen)
    later.add(0, 8, "used", record=record("c", 8))
    assert later.get("status") == ["used"]  # left to the driver


def test_without_dedup_repeats_stay_records():
    out = OutcomeBuilder(formats.get("openai"), dedup=False, in_order=True)
    for line in (1, 2):
        out.add(0, line, "used", record=record("same", line))
    assert out.get("status") == ["used", "used"]


def repeating(tasks: int, per_task: int) -> list[dict]:
    """``per_task`` rollouts a task: all but the last repeat the first's completion."""
    rows = []
    for task in range(tasks):
        for k in range(per_task):
            answer = f"answer {task}" if k < per_task - 1 else f"other {task}"
            rows.append(rollout([user(f"question {task}")], [_msg(answer, f"m{k}")], 1.0,
                                agent="a", task=task, rollout_index=k))  # fmt: skip
    return rows


@pytest.mark.usefixtures("ray_session")
def test_duplicates_in_one_block_or_across_blocks_give_the_same_dataset(tmp_path):
    """Repeated completions within a file, across files, and across tiny blocks: the
    first in order is kept, the others are listed as duplicates in line order, and the
    outputs are the same bytes whatever the blocks are."""
    rows = repeating(30, 4)  # 3 of 4 repeat
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[:20])  # every record of b repeats a's
    outs = {}
    for name, block, split in (("one", 64 << 20, 256 << 20), ("tiny", 2048, 256 << 20),
                               ("ranges", 2048, 8192)):  # fmt: skip
        res = gymray.prepare("sft", input=str(tmp_path / "in"), output=str(tmp_path / name),
                             **{"ray.block_bytes": block, "ray.split_bytes": split,
                                "sft.reward_threshold": 0})  # fmt: skip
        outs[name] = res
    one = tmp_path / "one"
    for other in ("tiny", "ranges"):
        for f in ("train.jsonl", "val.jsonl", "filtered.jsonl"):
            assert (one / f).read_bytes() == (tmp_path / other / f).read_bytes(), (other, f)
        assert outs[other].counts == outs["one"].counts
    c = outs["one"].counts
    assert c["filtered"] == {"duplicate": 30 * 2 + 20}
    assert c["records"]["train"] + c["records"]["val"] == 60
    # A worker drops what its task made before (a.jsonl's repeats, in any block), and
    # b.jsonl's repeats where a.jsonl's part was written first: the driver drops the rest.
    assert 60 <= outs["tiny"].manifest["stats"]["part_records"] <= 60 + 10
    assert outs["ranges"].manifest["stats"]["parts"] > 4  # several tasks a file
    dups = read_jsonl(one / "filtered.jsonl")
    order = [(d["file"].rsplit("/", 1)[-1], d["line"]) for d in dups]
    assert order == sorted(order)  # in the inputs' order, wherever they were dropped
    assert ("a.jsonl", 1) not in order and ("a.jsonl", 2) in order  # the first is kept
    kept = [orjson.loads(x) for x in (one / "train.jsonl").read_bytes().splitlines()]
    kept += [orjson.loads(x) for x in (one / "val.jsonl").read_bytes().splitlines()]
    texts = [r["messages"][-1]["content"] for r in kept]
    assert len(texts) == len(set(texts)) == 60
    for out in (tmp_path / name for name in outs):  # Parquet holds what JSONL holds
        for split in ("train", "val"):
            table = pq.read_table(out / "parquet" / split)
            lines = (out / f"{split}.jsonl").read_bytes().splitlines()
            assert [orjson.loads(m) for m in table.column("messages").to_pylist()] == [
                orjson.loads(x)["messages"] for x in lines
            ]
        assert not list(out.rglob("*.arrow"))  # the staged records are gone


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("dedup", [True, False])
def test_a_task_moved_to_val_is_in_val_parquet_as_in_val_jsonl(tmp_path, dedup):
    """No task falls in val by hash: the task nearest the boundary moves to val after
    the parts are written. Its records leave train for val in JSONL and Parquet alike,
    with duplicates dropped (staged parts) or not (Parquet parts rewritten), over
    several parts and row groups, and no staging file is left."""
    rows = repeating(30, 3)  # 1 of 3 repeats
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    out = tmp_path / "o"
    res = gymray.prepare("sft", input=str(tmp_path / "in"), output=str(out),
                         **{"ray.block_bytes": 2048, "ray.split_bytes": 8192,
                            "sft.reward_threshold": 0, "sft.dedup": dedup,
                            "split.val_fraction": 1e-9})  # fmt: skip
    assert res.manifest["stats"]["parts"] > 2
    per_task = 2 if dedup else 3
    assert res.counts["records"] == {"train": 30 * per_task - per_task, "val": per_task}
    val = read_jsonl(out / "val.jsonl")
    assert len({r["messages"][0]["content"] for r in val}) == 1  # one task, moved whole
    for split in ("train", "val"):
        files = sorted((out / "parquet" / split).glob("*.parquet"))
        table = pq.read_table(files)
        lines = (out / f"{split}.jsonl").read_bytes().splitlines()
        assert [orjson.loads(m) for m in table.column("messages").to_pylist()] == [
            orjson.loads(x)["messages"] for x in lines
        ]
    assert sum(pq.ParquetFile(f).num_row_groups for f in (out / "parquet").rglob("*.parquet")) > 2
    assert not [p for p in out.rglob("*") if p.suffix in (".arrow", ".rewrite")]
    assert any("moved to val" in w for w in res.manifest["warnings"])
