"""gymray.dataset.stats: counts that reconcile, per-file counts, dead-file warnings."""

from __future__ import annotations

import collections

import numpy as np

from gymray.dataset.assemble import Plan
from gymray.dataset.stats import (
    Counts,
    _quantiles,
    dead_file_warnings,
    environments,
    file_counts,
    merge,
)
from gymray.engine.write import PartStats
from gymray.histogram import reward_summary


def test_counts_reconcile_only_when_every_line_is_accounted_for():
    c = Counts(input_lines=10, used=6)
    c.filtered["low_reward"] = 3
    c.rejected["invalid_json"] = 1
    assert c.reconciles()
    c.rejected["missing_reward"] += 1
    assert not c.reconciles()
    d = c.as_dict()
    assert d["filtered"] == {"low_reward": 3} and list(d["rejected"]) == sorted(d["rejected"])


def test_file_counts_sum_lines_and_name_the_top_reject():
    per_file = {
        1: collections.Counter({"used": 0, "filtered": 0, "rejected": 5,
                                "rejected:missing_response": 4, "rejected:invalid_json": 1}),
        0: collections.Counter({"used": 3, "filtered": 1, "rejected": 0}),
    }  # fmt: skip
    out = file_counts(per_file, ["a_rollouts.jsonl", "example.jsonl"])
    assert list(out) == ["a_rollouts.jsonl", "example.jsonl"]
    assert out["a_rollouts.jsonl"] == {"used": 3, "filtered": 1, "rejected": 0, "lines": 4}
    assert out["example.jsonl"]["lines"] == 5
    assert out["example.jsonl"]["top_reject"] == "missing_response"


def test_files_all_rejected_get_one_warning_per_reason_with_a_hint_for_task_files():
    fc = {
        "d/example.jsonl": {"lines": 4, "rejected": 4, "top_reject": "missing_response"},
        "e/example.jsonl": {"lines": 2, "rejected": 2, "top_reject": "missing_response"},
        "junk.jsonl": {"lines": 3, "rejected": 3, "top_reject": "invalid_json"},
        "ok.jsonl": {"lines": 3, "rejected": 1, "top_reject": "invalid_json"},
        "empty.jsonl": {"lines": 0, "rejected": 0},
    }
    a, b = dead_file_warnings(fc)
    assert a.startswith("every line of 1 file(s) was rejected, mostly invalid_json: junk.jsonl")
    assert "2 file(s)" in b and "d/example.jsonl, e/example.jsonl" in b and "task files" in b


def test_quantiles_keep_few_values_and_summarise_many():
    few = np.array([3.0, 1.0, 2.0])
    assert sorted(_quantiles(few)) == [1, 2, 3]
    many = np.arange(10_000, dtype=np.float64)
    q = _quantiles(many, points=11)
    assert len(q) == 11 and q[0] == 0 and q[-1] == 9999 and q == sorted(q)


def part(key: str, envs: list[str], lines: list[tuple[int, float, int | None]]) -> PartStats:
    """A part from (environment code, reward, trained chars of its record or None)."""
    p = PartStats(key, lines=len(lines), used=len(lines), envs=envs)
    p.rewards = np.array([r for _, r, _ in lines])
    p.reward_env = np.array([e for e, _, _ in lines], np.int32)
    kept = [(e, c) for e, _, c in lines if c is not None]
    p.records = {
        "nbytes": np.full(len(kept), 10), "is_val": np.zeros(len(kept), bool),
        "file_id": np.zeros(len(kept), np.int64), "env": np.array([e for e, _ in kept], np.int32),
        "notes": [None] * len(kept), "chars": np.array([c for _, c in kept]),
        "value": np.zeros(len(kept)),
    }  # fmt: skip
    for e, _, _ in lines:
        p.per_env.setdefault(envs[e], collections.Counter())["used"] += 1
    return p


def test_environments_from_parts_that_code_them_in_different_orders():
    """Each part codes environments in the order it met them: merged, a reward and a
    record count for the environment its part named, whatever the code."""
    a = part("a", ["math", "code"], [(0, 1.0, 100), (1, 0.0, 7), (0, 0.5, None)])
    b = part("b", ["code", "chess"], [(0, 0.25, 9), (1, 0.75, 2000), (0, 0.0, None)])
    run = merge([a, b], Plan(records={"train": 4, "val": 0}))
    assert sorted(run.env_names) == ["chess", "code", "math"]
    reward = reward_summary(run.rewards)
    env = environments(run, 4.0, reward)
    assert {k: v["reward"]["count"] for k, v in env.items()} == {"chess": 1, "code": 3, "math": 2}
    assert env["math"]["reward"]["mean"] == 0.75 and env["chess"]["reward"]["max"] == 0.75
    assert env["code"]["reward"]["mean"] == (0.0 + 0.25 + 0.0) / 3
    assert env["code"]["chars"]["max"] == 9 and env["chess"]["chars"]["max"] == 2000
    assert env["math"]["chars"] == {"p50": 100, "p90": 100, "max": 100}
