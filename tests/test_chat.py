"""Responses API -> chat conversion, with expected messages written out by hand."""

from __future__ import annotations

import orjson
import pytest
from support import fixture

from gymray.chat import (
    ConversionError,
    completion_messages,
    convert_tools,
    pair_tool_calls,
    prompt_messages,
    tool_call_problem,
    trim_to_complete,
)
from gymray.rollouts import Rollout, parse_line
from gymray.samples.generate import (
    function_call,
    function_call_output,
    message,
    rollout,
    user,
)


def line(rel: str, n: int) -> bytes:
    return fixture(rel).read_bytes().split(b"\n")[n - 1]


def test_tool_calls_in_input_keep_ids_and_nest_tools():
    r = parse_line(line("resources_servers/citation_if/data/example_rollouts.jsonl", 1), "x.jsonl")
    assert isinstance(r, Rollout)
    assert r.prompt[0]["role"] == "system"
    assert r.prompt[1] == {
        "role": "user",
        "content": "On what date did Gateway sell the Amiga name and rights to Amino Development?",
    }
    assert r.prompt[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_3_citation_phgu",
                "type": "function",
                "function": {"name": "web_search", "arguments": '{"query": "Amiga"}'},
            }
        ],
    }
    assert r.prompt[3]["role"] == "tool" and r.prompt[3]["tool_call_id"] == "call_3_citation_phgu"
    assert r.prompt[3]["content"].startswith('{"query": "Amiga", "results"')
    assert r.prompt[-1] == {
        "role": "user",
        "content": "Research is complete. Provide your final answer now.",
    }
    # reasoning dropped by default; the answer is the assistant text
    assert r.completion == [
        {
            "role": "assistant",
            "content": "Gateway sold the Amiga name and rights to Amino Development on **31 December 1999** [ref:citation_phgu].",
        }
    ]
    assert r.tools == [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "description": "Search the web for a query and return ranked results with citable content.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "A single search query."}
                    },
                    "required": ["query"],
                },
                "strict": False,
            },
        }
    ]
    assert (r.agent, r.task_index, r.task_key) == (
        "citation_if_simple_agent",
        3,
        "agent:citation_if_simple_agent#3",
    )


def test_user_simulator_turns_in_output_stay_user_turns():
    r = parse_line(line("environments/blackjack/data/example_rollouts.jsonl", 1), "b.jsonl")
    assert [m["role"] for m in r.completion] == ["assistant", "user", "assistant"]
    assert r.completion[0] == {"role": "assistant", "content": "<action>hit</action>"}
    assert r.completion[1]["content"].startswith("Your hand: [8, 5, 3] = 16")
    assert r.reward == -1.0


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("drop", lambda m: "reasoning_content" not in m and not m["content"].startswith("<think>")),
        (
            "reasoning_content",
            lambda m: m["reasoning_content"].startswith("Okay, let's tackle this translation"),
        ),
        (
            "think",
            lambda m: (
                m["content"].startswith("<think>\nOkay, let's tackle this translation")
                and '</think>\n\n\n"Wir haben' in m["content"]
            ),
        ),
    ],
)
def test_reasoning_modes(mode, check):
    r = parse_line(line("benchmarks/flores200/data/example_rollouts.jsonl", 1), "f.jsonl", mode)
    assert len(r.completion) == 1 and r.completion[0]["role"] == "assistant"
    assert check(r.completion[0])


def test_parallel_calls_group_into_one_turn_and_reasoning_attaches_to_it():
    output = [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "two lookups"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking."}],
        },
        {"type": "function_call", "name": "f", "arguments": '{"a": 1}', "call_id": "c1"},
        {"type": "function_call", "name": "g", "arguments": "{}", "call_id": "c2"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "two"}],
        },
        [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Done."}],
            }
        ],
    ]
    msgs, _ = completion_messages(output, "reasoning_content")
    assert msgs == [
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "two lookups",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "assistant", "content": "Done."},
    ]


def test_images_stay_chat_parts_and_developer_becomes_system():
    rcp = {
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": "Rules."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is it?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAA"},
                ],
            },
        ],
    }
    msgs, has_image = prompt_messages(rcp)
    assert has_image
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
        },
    ]


def test_string_input_is_one_user_message():
    assert prompt_messages({"input": "hi"})[0] == [{"role": "user", "content": "hi"}]


def test_unknown_item_names_the_field():
    with pytest.raises(ConversionError) as e:
        completion_messages(
            [{"type": "message", "role": "assistant", "content": "x"}, {"type": "web_search_call"}]
        )
    assert e.value.field == "response.output[1].type"


A = {"type": "message", "role": "assistant", "content": "x"}


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ([{"type": "message", "role": "assistant", "content": ["a", 3]}],
         "response.output[0].content[1]"),
        ([{"type": "message", "role": "assistant", "content": [{"type": "output_text"}]}],
         "response.output[0].content[0].text"),
        ([{"type": "message", "role": "assistant", "content": [{"type": "audio"}]}],
         "response.output[0].content[0].type"),
        ([{"type": "message", "role": "assistant", "content": [{"type": "input_image"}]}],
         "response.output[0].content[0].image_url"),
        ([{"type": "message", "role": "assistant",
           "content": [{"type": "input_image", "image_url": "data:x"}]}],
         "response.output[0].content"),
        ([{"type": "message", "role": "critic", "content": "x"}], "response.output[0].role"),
        ([{"type": "message", "content": "x"}], "response.output[0].role"),
        ([{"type": "reasoning", "summary": "x"}, A], "response.output[0].summary"),
        ([{"type": "reasoning", "summary": [{"text": "a"}, 7]}, A],
         "response.output[0].summary[1]"),
        ([A, {"type": "function_call", "call_id": "c"}], "response.output[1].name"),
        ([{"type": "function_call", "name": "f"}], "response.output[0].call_id"),
        ([{"type": "function_call", "name": "f", "call_id": "c", "arguments": {}}],
         "response.output[0].arguments"),
        ([A, {"type": "function_call_output", "output": "x"}], "response.output[1].call_id"),
        ([A, {"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}],
         "response.output[1].output[0].type"),
        ([A, {"type": "function_call_output", "call_id": "c",
              "output": [{"type": "input_image", "image_url": "data:x"}]}],
         "response.output[1].output"),
        ([A, [A, {"type": "web_search_call"}]], "response.output[1][1].type"),
        ([A, [A, [7]]], "response.output[1][1][0]"),
        ([A, {"type": "message", "role": "user"}], "response.output[1].content"),
        ([A, {"type": "message", "role": "user", "content": None}], "response.output[1].content"),
    ],
)  # fmt: skip
def test_every_conversion_error_names_its_json_path(output, field):
    with pytest.raises(ConversionError) as e:
        completion_messages(output)
    assert e.value.field == field and str(e.value).startswith(f"{field}: ")


def test_prompt_and_tool_errors_name_their_json_path():
    with pytest.raises(ConversionError) as e:
        prompt_messages({"input": [{"role": "user", "content": [{"type": "text", "text": 1}]}]})
    assert e.value.field == "responses_create_params.input[0].content[0].text"
    with pytest.raises(ConversionError, match="system message has no content") as e:
        prompt_messages({"input": [{"role": "system"}, {"role": "user", "content": "q"}]})
    assert e.value.field == "responses_create_params.input[0].content"
    with pytest.raises(ConversionError) as e:
        convert_tools([{"type": "function", "name": "a"}, "b"])
    assert e.value.field == "responses_create_params.tools[1]"
    with pytest.raises(ConversionError) as e:
        convert_tools([{"type": "function"}])
    assert e.value.field == "responses_create_params.tools[0].name"


def test_non_function_tool_is_an_error_with_path():
    with pytest.raises(ConversionError) as e:
        convert_tools([{"type": "function", "name": "a"}, {"type": "web_search_preview"}])
    assert e.value.field == "responses_create_params.tools[1].type"


def test_trim_cuts_a_trajectory_cut_mid_call():
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "thinking"},
        {"role": "user", "content": "go on"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]
    assert trim_to_complete(msgs, 1) == msgs[:2]
    assert trim_to_complete(msgs[:1] + msgs[3:], 1) is None


def test_every_fixture_conversation_is_well_formed():
    """On every real file: roles are chat roles, tool results follow their calls."""
    from support import rollout_files

    seen = 0
    for path in rollout_files():
        for raw in path.read_bytes().split(b"\n"):
            r = parse_line(raw, path.name, "think")
            if not isinstance(r, Rollout):
                continue
            seen += 1
            called = set()
            for m in r.prompt + r.completion:
                assert m["role"] in ("system", "user", "assistant", "tool"), (path, m["role"])
                if m["role"] == "assistant":
                    called.update(c["id"] for c in m.get("tool_calls", []))
                    for c in m.get("tool_calls", []):
                        orjson.loads(c["function"]["arguments"] or "{}")  # kept as a JSON string
                if m["role"] == "tool":
                    assert m["tool_call_id"] in called, (path, m)
            for t in r.tools:
                assert set(t) == {"type", "function"} and t["function"]["name"]
    assert seen > 400


# --------------------------------------------------------------------------- tool call ids
def _ids(messages):
    return [(m["role"], c["id"]) for m in messages for c in m.get("tool_calls") or ()] + [
        ("tool", m["tool_call_id"]) for m in messages if m["role"] == "tool"
    ]


def test_empty_arguments_mean_no_arguments():
    output = [
        function_call("now", {}, "c1") | {"arguments": ""},
        function_call("now", {}, "c2") | {"arguments": "  "},
        function_call_output("c1", "noon"),
        function_call_output("c2", "noon"),
        message("Noon.", "m"),
    ]
    msgs, _ = completion_messages(output)
    assert [c["function"]["arguments"] for c in msgs[0]["tool_calls"]] == ["{}", "{}"]


def test_an_id_reused_after_its_result_is_renamed_in_order():
    """Harnesses that number calls per turn reuse ids: each call and its result get
    an id of their own, so ids pair calls with results again."""
    r = parse_line(
        orjson.dumps(
            rollout(
                [
                    user("q"),
                    function_call("f", {"a": 0}, "call_0"),
                    function_call_output("call_0", "r0"),
                ],
                [
                    function_call("f", {"a": 1}, "call_0"),
                    function_call_output("call_0", "r1"),
                    function_call("f", {"a": 2}, "call_0"),
                    function_call("g", {}, "call_0_2"),
                    function_call_output("call_0", "r2"),
                    function_call_output("call_0_2", "g"),
                    message("done", "m"),
                ],
                1.0,
            )  # fmt: skip
        )
    )
    msgs = r.prompt + r.completion
    assert [(m["role"], m.get("content")) for m in msgs if m["role"] == "tool"] == [
        ("tool", "r0"), ("tool", "r1"), ("tool", "r2"), ("tool", "g"),
    ]  # fmt: skip
    calls = [c["id"] for m in msgs for c in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
    # call_0_2 is a real call's id: the second call_0 becomes call_0_3
    assert calls == results == ["call_0", "call_0_3", "call_0_4", "call_0_2"]


def test_calls_sharing_an_id_while_unanswered_are_left_as_they_are():
    output = [
        function_call("f", {"a": 1}, "c"),
        function_call("f", {"a": 2}, "c"),
        function_call_output("c", "one"),
        function_call_output("c", "two"),
        message("done", "m"),
    ]
    msgs, _ = completion_messages(output)
    assert pair_tool_calls(msgs) is False
    assert _ids(msgs) == [("assistant", "c"), ("assistant", "c"), ("tool", "c"), ("tool", "c")]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"city": "Paris"}', None),
        ("{}", None),
        ('{"city": "Par', "invalid_tool_arguments"),
        ("[1, 2]", "invalid_tool_arguments"),
        ('"Paris"', "invalid_tool_arguments"),
    ],
)
def test_tool_arguments_must_be_a_json_object(arguments, problem):
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        {"role": "assistant", "content": "a"},
    ]  # fmt: skip
    assert tool_call_problem(msgs) == problem


def test_a_duplicate_id_left_in_a_conversation_is_a_problem():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [{"role": "assistant", "content": "", "tool_calls": [call, dict(call)]}]
    assert tool_call_problem(msgs) == "duplicate_tool_call_id"


# --------------------------------------------------------------------------- generated twins
# The fixture-line tests above, on lines generated in the repo in the same shapes, with
# the expected messages derived from the builders' arguments.
def generated_line(rel: str, n: int) -> bytes:
    from support import generated

    return generated(rel).read_bytes().split(b"\n")[n - 1]


def test_generated_tool_calls_in_input_keep_ids_and_nest_tools():
    from gymray.samples.gym_shapes import citation

    raw = generated_line("resources_servers/citation_if/data/example_rollouts.jsonl", 1)
    assert orjson.loads(raw) == citation(0, 0)  # first line: task 0, rollout 0
    r = parse_line(raw, "x.jsonl")
    cid = "call_0_citation_0"
    assert [m["role"] for m in r.prompt] == ["system", "user", "assistant", "tool", "user"]
    assert r.prompt[1] == {"role": "user", "content": "In which year did event 0 happen?"}
    assert r.prompt[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": cid, "type": "function",
             "function": {"name": "web_search", "arguments": '{"query": "event 0"}'}}
        ],
    }  # fmt: skip
    assert r.prompt[3]["tool_call_id"] == cid and '"Event 0 was in 1990."' in r.prompt[3]["content"]
    # the empty reasoning item leaves the answer alone
    assert r.completion == [{"role": "assistant", "content": "It happened in 1990 [ref:ref_0]."}]
    (t,) = r.tools
    assert set(t) == {"type", "function"} and t["function"]["name"] == "web_search"
    assert t["function"]["parameters"]["properties"]["query"]["type"] == "string"
    assert (r.agent, r.task_index, r.task_key) == (
        "citation_if_simple_agent",
        0,
        "agent:citation_if_simple_agent#0",
    )


def test_generated_user_simulator_turns_stay_user_turns():
    r = parse_line(generated_line("environments/blackjack/data/example_rollouts.jsonl", 1), "b")
    assert [m["role"] for m in r.completion] == ["assistant", "user", "assistant"]
    assert r.completion[0] == {"role": "assistant", "content": "<action>hit</action>"}
    assert r.completion[1]["content"].startswith("Your hand: [2, 3, 3] = 8")
    assert [m["role"] for m in r.prompt] == ["system", "user", "user"]


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("drop", lambda m: "reasoning_content" not in m and m["content"].startswith("<think>word")),
        ("reasoning_content",
         lambda m: m["reasoning_content"].startswith("Okay, let's tackle this translation")),
        ("think",
         lambda m: m["content"].startswith("<think>\nOkay, let's tackle this translation")
         and m["content"].endswith("<think>word by word</think>Satz 0.0")),
    ],
)  # fmt: skip
def test_generated_reasoning_modes(mode, check):
    r = parse_line(generated_line("benchmarks/flores200/data/example_rollouts.jsonl", 1), "f", mode)
    assert len(r.completion) == 1 and r.completion[0]["role"] == "assistant"
    assert check(r.completion[0]), r.completion[0]


def test_every_generated_conversation_is_well_formed(tmp_path):
    from gymray.samples.gym_shapes import gym_tree

    tree = gym_tree(tmp_path)
    seen = 0
    for rel in tree["rollouts"]:
        for raw in (tmp_path / rel).read_bytes().split(b"\n"):
            r = parse_line(raw, rel, "think")
            if not isinstance(r, Rollout):
                continue
            seen += 1
            called = set()
            for m in r.prompt + r.completion:
                assert m["role"] in ("system", "user", "assistant", "tool"), (rel, m["role"])
                if m["role"] == "assistant":
                    for c in m.get("tool_calls", []):
                        called.add(c["id"])
                        orjson.loads(c["function"]["arguments"] or "{}")
                if m["role"] == "tool":
                    assert m["tool_call_id"] in called, (rel, m)
            for t in r.tools:
                assert set(t) == {"type", "function"} and t["function"]["name"]
    assert seen == tree["expected"]["ok"]
