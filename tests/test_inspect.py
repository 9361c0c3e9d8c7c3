"""gymray.inspect: records of every format shown as a person reads them."""

from __future__ import annotations

import io
import json

from gymray.inspect import (
    TEXT,
    conversation,
    environment_table,
    read_head,
    record_lines,
    render_dataset,
)

META = {"task": "agent:a#1", "source": [{"file": "dir/x_rollouts.jsonl", "line": 7}]}


def test_a_conversation_shows_roles_text_calls_and_empty_turns():
    lines = conversation([
        {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:"}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "content": "cold\nand dark"},
        {"role": "assistant", "content": ""},
    ])  # fmt: skip
    assert lines[0].strip() == "user: hi [image_url]"
    assert lines[1].strip() == 'assistant: → get_weather({"city": "Oslo"})'
    assert lines[2].strip() == "tool: cold ⏎ and dark"  # one line a message
    assert lines[3].strip() == "assistant: (empty)"


def test_long_text_is_cut_saying_how_much_is_left():
    (line,) = conversation([{"role": "user", "content": "x" * (TEXT + 50)}])
    assert line.endswith("… (+50 chars)") and line.count("x") == TEXT


def test_records_of_each_format_name_their_source_and_parts():
    openai = record_lines({"messages": [{"role": "user", "content": "q"}],
                           "tools": [{"type": "function", "function": {"name": "f"}}],
                           "meta": META})  # fmt: skip
    assert openai[0] == "- task agent:a#1 (x_rollouts.jsonl:7)" and openai[-1].strip() == "tools: f"
    pref = record_lines({"context": [{"role": "user", "content": "q"}], "completions": [
        {"rank": 1, "completion": [{"role": "assistant", "content": "bad"}]},
        {"rank": 0, "completion": [{"role": "assistant", "content": "good"}]}],
        "meta": {**META, "chosen_reward": 1.0, "rejected_reward": 0.0}})  # fmt: skip
    text = "\n".join(pref)
    assert text.index("chosen (reward 1.0)") < text.index("good") < text.index("rejected")
    binary = record_lines({"prompt": "q", "chosen": "c", "rejected": "r", "chosen_reward": 1,
                           "rejected_reward": 0, "meta": META})  # fmt: skip
    assert "  chosen (1): c" in binary and "  rejected (0): r" in binary
    gym = record_lines({"responses_create_params": {"input": "q"}, "agent_ref": {"name": "ag"},
                        "expected_answer": "4", "meta": META})  # fmt: skip
    assert gym[-1] == "  agent: ag; task fields: expected_answer"
    simple = record_lines({"input": "q", "output": "a", "meta": META})
    assert simple[1:] == ["  input: q", "  output: a"]


def test_environment_table_sorts_by_lines():
    def env(lines, train):
        return {"lines": lines, "used": train, "filtered": {"low_reward": 1},
                "rejected": {}, "records": {"train": train, "val": 0},
                "reward": {"mean": 0.25}}  # fmt: skip

    rows = environment_table({"small": env(2, 1), "big": env(9, 8)})
    assert rows[0].split()[:3] == ["environment", "lines", "used"]
    assert [r.split()[:7] for r in rows[1:]] == [
        ["big", "9", "8", "1", "0", "8", "0"],
        ["small", "2", "1", "1", "0", "1", "0"],
    ]
    assert rows[1].split()[7] == "0.25"


def test_read_head_reads_n_records():
    stream = io.BytesIO(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(5)))
    assert read_head(stream, 2) == [{"i": 0}, {"i": 1}]


class _Dataset:
    output = "/data/sft"

    def __init__(self, manifest: dict):
        self.manifest = manifest

    def head(self, n: int) -> list:
        return []


def test_inspect_lists_every_reason_so_the_counts_add_up():
    """Six reject reasons: all are listed (the sixth was left out, unsaid)."""
    rejected = {"invalid_json": 2, "empty_trajectory": 1, "missing_reward": 1,
                "not_an_object": 1, "reward_not_finite": 1, "reward_not_number": 1}  # fmt: skip
    counts = {"input_lines": 40, "used": 9, "filtered": {"tied_rewards": 24},
              "rejected": rejected, "records": {"train": 8, "val": 1}}  # fmt: skip
    shown = render_dataset(_Dataset({"algo": "sft", "format": "openai", "counts": counts}))
    (line,) = [x for x in shown.splitlines() if x.startswith("  rejected:")]
    listed = dict(part.rsplit(" ", 1) for part in line.removeprefix("  rejected: ").split(", "))
    assert {k: int(v) for k, v in listed.items()} == rejected
    assert "rejected 7" in shown
