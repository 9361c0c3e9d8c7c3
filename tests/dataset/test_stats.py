"""gymray.dataset.stats: counts that reconcile, per-file counts, dead-file warnings."""

from __future__ import annotations

import collections

import numpy as np

from gymray.dataset.stats import Counts, _quantiles, dead_file_warnings, file_counts


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
