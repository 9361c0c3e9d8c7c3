"""Task files joined to their rollouts (pure, no Ray)."""

from __future__ import annotations

from gymray.recipes.tasks import TaskTable
from gymray.rollouts import MAX_DEPTH


def test_a_task_row_too_deep_for_a_record_is_a_bad_line_not_a_crash_later():
    deep = b'{"gt": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    data = b'{"question": "q0", "expected_answer": "4"}\n' + deep + b'\n{"question": "q2"}\n'
    table = TaskTable([("d/example.jsonl", data)], ["d/example_rollouts.jsonl"])
    assert table.bad_lines == 1
    assert table.row("d/example_rollouts.jsonl", 0, None)["expected_answer"] == "4"
    assert table.row("d/example_rollouts.jsonl", 1, None) is None  # its row number stays 1
    assert table.row("d/example_rollouts.jsonl", 2, None) == {"question": "q2"}
