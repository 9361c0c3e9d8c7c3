"""SFT records from single rollouts (pure, no Ray)."""

from __future__ import annotations

import orjson
from support import member

from gymray.chat import ChatSettings
from gymray.recipes.sft import SFTSettings, sft_record
from gymray.rollouts import Rollout, parse_line
from gymray.samples.generate import (
    function_call,
    function_call_output,
    message,
    rollout,
    tool,
    user,
)

CHAT = ChatSettings()


def test_sft_threshold_and_truncation():
    m = member(0, 0.9)
    assert sft_record(m.rollout, m.source, SFTSettings(), CHAT) == (None, "below_reward_threshold")
    m.rollout.truncated = "max_output_tokens"
    assert sft_record(m.rollout, m.source, SFTSettings(reward_threshold=None), CHAT) == (
        None,
        "truncated",
    )


def _tool_rollout(output, **kw):
    r = parse_line(orjson.dumps(rollout([user("q")], output, 1.0, **kw)), "f.jsonl")
    assert isinstance(r, Rollout)
    return r


def _record(r):
    return sft_record(r, ("f.jsonl", 1), SFTSettings(), CHAT)


def test_tool_arguments_that_are_not_a_json_object_are_filtered():
    for bad in ('{"city": "Par', "[1]", "null"):
        r = _tool_rollout([
            function_call("f", {}, "c") | {"arguments": bad},
            function_call_output("c", "r"), message("a", "m"),
        ])  # fmt: skip
        assert _record(r) == (None, "invalid_tool_arguments"), bad


def test_broken_arguments_in_a_trimmed_tail_do_not_filter_the_rest():
    r = _tool_rollout([message("first answer", "m0"), user("more?"),
                       function_call("f", {}, "c") | {"arguments": "{oops"}])  # fmt: skip
    record, reason = _record(r)
    assert reason is None and record["messages"][-1] == {
        "role": "assistant",
        "content": "first answer",
    }


def test_reused_call_ids_are_renamed_and_ambiguous_ones_filtered():
    turns = [
        function_call("f", {"n": 1}, "call_0"), function_call_output("call_0", "one"),
        function_call("f", {"n": 2}, "call_0"), function_call_output("call_0", "two"),
        message("done", "m"),
    ]  # fmt: skip
    record, _ = _record(_tool_rollout(turns))
    calls = [c["id"] for m in record["messages"] for c in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in record["messages"] if m["role"] == "tool"]
    assert calls == results == ["call_0", "call_0_2"]
    parallel = [
        function_call("f", {"n": 1}, "c"), function_call("f", {"n": 2}, "c"),
        function_call_output("c", "one"), function_call_output("c", "two"),
        message("done", "m"),
    ]  # fmt: skip
    assert _record(_tool_rollout(parallel)) == (None, "duplicate_tool_call_id")


def test_simple_format_filters_rollouts_offered_tools_whose_schemas_it_cannot_hold():
    """{input, output} has no place for tool schemas: a text answer given with tools on
    offer (asking for the city rather than calling get_weather) would teach the answer
    without the context that explains it. openai format keeps them, tools included."""
    offered = _tool_rollout([message("Which city?", "m")], tools=[tool("get_weather")])
    plain = _tool_rollout([message("Paris.", "m")])
    simple = SFTSettings(format="simple", reward_threshold=None)
    assert sft_record(offered, ("f.jsonl", 1), simple, CHAT) == (None, "tools_offered")
    record, reason = sft_record(plain, ("f.jsonl", 2), simple, CHAT)
    assert reason is None and record["output"] == "Paris."
    record, reason = sft_record(offered, ("f.jsonl", 1), SFTSettings(reward_threshold=None), CHAT)
    assert reason is None and record["tools"][0]["function"]["name"] == "get_weather"
