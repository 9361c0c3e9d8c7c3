"""The decisions no single block can make (dataset/assemble.py), on parts' stats alone:
duplicates across parts, the val fallback, and the byte ranges files are made of."""

from __future__ import annotations

import numpy as np
import pytest

from gymray.dataset.assemble import PARQUET_TASK_BYTES, Listing, decide, listings, parquet_tasks
from gymray.engine.write import PartStats, Target


def part(key: str, content: list[int], *, val=None, split_u=None, task=None, tools=None):
    n = len(content)
    p = PartStats(key)
    p.records = {
        "nbytes": np.full(n, 10),
        "content_hash": np.array(content, np.int64),
        "is_val": np.array(val or [False] * n),
        "split_u": np.array(split_u or [0.5] * n),
        "task_hash": np.array(task or content, np.int64),
        "tools_hash": np.array(tools or [7] * n, np.int64),
    }
    return p


def test_duplicates_across_parts_keep_the_first_in_the_datasets_order():
    parts = [part("a", [1, 2]), part("b", [2, 3, 1]), part("c", [3])]
    plan = decide(parts, dedup=True, val_fraction=0.0)
    assert plan.dropped.keys() == {"b", "c"}
    assert plan.dropped["b"].tolist() == [True, False, True]
    assert plan.dropped["c"].tolist() == [True]
    assert plan.records == {"train": 3, "val": 0}
    assert plan.tasks == 3


def test_without_dedup_nothing_is_dropped():
    plan = decide([part("a", [1, 1, 1])], dedup=False, val_fraction=0.0)
    assert plan.dropped == {} and plan.records == {"train": 3, "val": 0}


def test_no_task_in_val_moves_the_task_nearest_the_boundary():
    p = part("a", [1, 2, 3, 4], split_u=[0.9, 0.2, 0.6, 0.2], task=[10, 20, 30, 20])
    plan = decide([p], dedup=True, val_fraction=0.05)
    assert plan.moved_task
    assert plan.moved["a"].tolist() == [False, True, False, True]  # both rollouts of task 20
    assert plan.records == {"train": 2, "val": 2}


def test_no_move_when_val_has_records_one_task_or_no_val_wanted():
    with_val = part("a", [1, 2], val=[True, False], task=[1, 2])
    assert not decide([with_val], True, 0.05).moved
    one_task = part("a", [1, 2], task=[5, 5])
    assert not decide([one_task], True, 0.05).moved
    assert not decide([part("a", [1, 2])], True, 0.0).moved


def test_a_dropped_duplicate_is_not_what_moves_to_val():
    # the only record of task 20 repeats one of task 10: dropped, so task 10 moves
    p = part("a", [1, 1], split_u=[0.7, 0.1], task=[10, 20])
    plan = decide([p], dedup=True, val_fraction=0.05)
    assert plan.dropped["a"].tolist() == [False, True]
    assert not plan.moved  # one task left: nothing to split
    assert plan.records == {"train": 1, "val": 0}


def test_tools_differ_only_among_kept_records():
    same = decide([part("a", [1, 2], tools=[7, 7])], True, 0.0)
    differ = decide([part("a", [1, 2], tools=[7, 8])], True, 0.0)
    dropped_differs = decide([part("a", [1, 1], tools=[7, 8])], True, 0.0)
    assert (same.tools_differ, differ.tools_differ, dropped_differs.tools_differ) == (
        False, True, False,
    )  # fmt: skip


def test_parts_without_records_are_skipped():
    empty = PartStats("e")
    plan = decide([empty, part("a", [1]), empty], True, 0.0)
    assert plan.records == {"train": 1, "val": 0}


def test_adjacent_ranges_of_one_file_merge_and_empty_ones_vanish():
    names = ["x", "y"]
    src, offset, length = [0, 0, 1, 0, 1, 1], [0, 5, 0, 20, 3, 5], [5, 5, 0, 5, 2, 1]
    merged = Listing.merged(names, src, offset, length)
    assert merged.ranges() == [("x", 0, 10), ("x", 20, 5), ("y", 3, 3)]
    assert merged.total == 18
    assert Listing.merged(names, [1], [4], [0]).ranges() == []


@pytest.mark.parametrize("size", [1, 7, 10, 25, 1000])
def test_copy_chunks_cover_the_file_in_order_each_starting_in_another_share(size):
    listing = Listing.merged(["x", "y"], [0, 1, 0, 1], [0, 0, 50, 9], [10, 3, 12, 4])
    chunks = listing.chunks(size)
    assert [r for _, c in chunks for r in c.ranges()] == listing.ranges()
    at = 0
    for offset, chunk in chunks:
        assert offset == at  # where the chunk's first range goes in the file
        at += chunk.total
    starts = [offset // size for offset, _ in chunks]
    assert starts == sorted(set(starts))  # a chunk for each share of the file a range starts in


def _ranges(pieces: list) -> list:
    """Merge adjacent ranges of the same file into one; drop empty ones."""
    out: list = []
    for src, offset, length in pieces:
        if length <= 0:
            continue
        if out and out[-1][0] == src and out[-1][1] + out[-1][2] == offset:
            out[-1] = (src, out[-1][1], out[-1][2] + length)
        else:
            out.append((src, offset, length))
    return out


def reference_listings(parts, plan, target):
    """The per-record way to list the pieces (what the vectorized listings must equal)."""
    files = {"train.jsonl": [], "val.jsonl": [], "filtered.jsonl": [], "rejects.jsonl": []}
    for p in parts:
        rel = lambda kind, key=p.key: f"{target.parts}/{key}.{kind}.jsonl"  # noqa: E731
        rec = p.records
        m = len(rec.get("nbytes", ()))
        dropped = plan.dropped.get(p.key, np.zeros(m, bool))
        moved = plan.moved.get(p.key, np.zeros(m, bool))
        at = {"train": 0, "val": 0}
        for j in range(m):
            split = "val" if rec["is_val"][j] else "train"
            if not dropped[j]:
                dest = "val.jsonl" if (split == "val" or moved[j]) else "train.jsonl"
                files[dest].append((rel(split), at[split], int(rec["nbytes"][j])))
            at[split] += int(rec["nbytes"][j])
        at_f, dup_at = 0, 0
        for j in range(m):
            if dropped[j]:
                cut = int(rec["filtered_at"][j])
                files["filtered.jsonl"].append((rel("filtered"), at_f, cut - at_f))
                files["filtered.jsonl"].append((rel("dup"), dup_at, int(rec["dup_nbytes"][j])))
                at_f = cut
            dup_at += int(rec["dup_nbytes"][j]) if "dup_nbytes" in rec else 0
        size = p.sizes.get("filtered", 0)
        files["filtered.jsonl"].append((rel("filtered"), at_f, size - at_f))
        files["rejects.jsonl"].append((rel("rejects"), 0, p.sizes.get("rejects", 0)))
    return {name: _ranges(pieces) for name, pieces in files.items()}


@pytest.mark.parametrize("seed", range(30))
def test_listings_equal_the_per_record_way(seed):
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(int(rng.integers(1, 5))):
        m = int(rng.integers(0, 40))
        p = part(f"k{k}", rng.integers(0, 15, m).tolist(), val=(rng.random(m) < 0.3).tolist(),
                 split_u=rng.random(m).tolist())  # fmt: skip
        p.records["nbytes"] = rng.integers(1, 50, m)
        p.records["dup_nbytes"] = rng.integers(20, 30, m)
        # where each record's duplicate line would go into the filtered listing
        p.records["filtered_at"] = np.cumsum(rng.integers(0, 3, m) * 7)
        p.sizes = {"filtered": int(p.records["filtered_at"][-1] + 7) if m else int(rng.integers(0, 9)),
                   "rejects": int(rng.integers(0, 100))}  # fmt: skip
        parts.append(p)
    plan = decide(parts, dedup=bool(rng.random() < 0.8), val_fraction=0.1)
    target = Target("o", "/s", attempt=int(rng.integers(0, 2)))
    got = {name: listing.ranges() for name, listing in listings(parts, plan, target).items()}
    assert got == reference_listings(parts, plan, target)


def sized(key: str, mib: float, n: int = 4) -> PartStats:
    p = part(key, list(range(n)))
    p.sizes = {"train": int(mib * (1 << 20)), "val": 0}
    return p


def test_parquet_tasks_give_every_core_work():
    """A task took up to 128 MiB of records: 120 MB at the default reward threshold was
    one task, and one core of two idled through the Parquet phase (15 of 16 on a
    16-core node). Now a task a CPU where there is less, each part once, in order."""
    parts = [sized(f"{k:02d}", 4) for k in range(28)]  # 112 MiB of records
    plan = decide(parts, dedup=True, val_fraction=0.0)
    for cpus, want in ((1, 1), (2, 2), (7, 7)):
        tasks = parquet_tasks(parts, plan, staged=True, cpus=cpus)
        assert [t[0] for task in tasks for t in task] == [p.key for p in parts]
        assert len(tasks) == want
    # more CPUs than parts: a part a task, never an empty one
    assert len(parquet_tasks(parts, plan, staged=True, cpus=64)) == 28
    # much more than the CPUs' share: still at most PARQUET_TASK_BYTES a task
    big = [sized(f"{k:02d}", 16) for k in range(40)]  # 640 MiB
    tasks = parquet_tasks(big, decide(big, True, 0.0), staged=True, cpus=2)
    assert [len(t) for t in tasks] == [PARQUET_TASK_BYTES // (16 << 20)] * 5


def test_parquet_tasks_skip_parts_with_nothing_to_write():
    parts = [sized("a", 1), sized("b", 1, n=0), sized("c", 1)]
    plan = decide(parts, dedup=True, val_fraction=0.0)
    keys = [t[0] for task in parquet_tasks(parts, plan, staged=True, cpus=2) for t in task]
    assert keys == ["a", "c"]
    # unstaged (recipes without duplicates): only the parts whose records move are rewritten
    assert parquet_tasks(parts, plan, staged=False, cpus=2) == []
