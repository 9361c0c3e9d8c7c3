"""Parsing lines into canonical rollouts or rejects, on every fixture file."""

from __future__ import annotations

import collections
import hashlib

import pytest
from support import fixture, rollout_files

from gymray.rollouts import (
    MAX_DEPTH,
    Reject,
    Rollout,
    hash64,
    is_sidecar,
    parse_line,
    prompt_hash_key,
    unit_interval,
)


def test_every_fixture_line_is_a_rollout_or_a_named_reject():
    counts = collections.Counter()
    for path in rollout_files():
        lines = path.read_bytes().split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        for raw in lines:
            r = parse_line(raw, path.name)
            assert isinstance(r, (Rollout, Reject))
            counts[r.reason if isinstance(r, Reject) else "ok"] += 1
    # the measured shapes of the fixtures: placeholder rows, judge files without
    # response, empty trajectories
    assert counts["invalid_json"] == 20
    assert counts["missing_response"] == 10
    assert counts["empty_trajectory"] == 10
    assert counts["ok"] > 450
    assert set(counts) <= {"ok", "invalid_json", "missing_response", "empty_trajectory"}


def test_placeholder_row_is_invalid_json():
    raw = (
        fixture("resources_servers/tavily_search/data/example_rollouts.jsonl")
        .read_bytes()
        .split(b"\n")
    )
    placeholder = next(x for x in raw if x.startswith(b"<PLACEHOLDER"))
    r = parse_line(placeholder)
    assert isinstance(r, Reject) and r.reason == "invalid_json"


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"", "empty_line", None),
        (b"[1, 2]", "not_an_object", None),
        (b'{"reward": 1}', "missing_response", "response"),
        (b'{"response": "x", "reward": 1}', "invalid_response", "response"),
        (
            b'{"response": {"output": [{"type": "message", "role": "assistant", "content": "a"}]}}',
            "missing_reward",
            "reward",
        ),
        (b'{"response": {"output": []}, "reward": "high"}', "reward_not_number", "reward"),
        (b'{"response": {"output": []}, "reward": true}', "reward_not_number", "reward"),
        (b'{"response": {"output": []}, "reward": NaN}', "reward_not_finite", "reward"),
        (b'{"response": {"output": []}, "reward": -Infinity}', "reward_not_finite", "reward"),
        (b'{"response": {"output": []}, "reward": 1}', "empty_trajectory", "response.output"),
        (b'{"response": {}, "reward": 1}', "missing_output", "response.output"),
        (
            b'{"response": {"output": [{"type": "computer_call"}]}, "reward": 1}',
            "unsupported_shape",
            "response.output[0].type",
        ),
        (
            b'{"response": {"output": [{"type": "message", "role": "assistant", "content": "a"}]}, "reward": 1, "x": "\\ud800"}',
            "invalid_unicode",
            None,
        ),
    ],
)
def test_reject_reasons_name_the_field(raw, reason, field):
    r = parse_line(raw)
    assert isinstance(r, Reject)
    assert (r.reason, r.field) == (reason, field)
    assert r.detail


def test_line_separators_inside_strings_are_content():
    raw = '{"responses_create_params": {"input": "a\u2028b\u0085c"}, "response": {"output": [{"type": "message", "role": "assistant", "content": "ok"}]}, "reward": 2}'.encode()
    r = parse_line(raw)
    assert r.prompt == [{"role": "user", "content": "a\u2028b\u0085c"}]
    assert r.reward == 2.0 and isinstance(r.reward, float)


def test_task_key_prefers_agent_and_index_then_prompt_hash():
    base = b'"response": {"output": [{"type": "message", "role": "assistant", "content": "a"}]}, "reward": 0'
    a = parse_line(b'{"agent_ref": {"name": "ag"}, "_ng_task_index": 4, ' + base + b"}", "f.jsonl")
    b = parse_line(b'{"_ng_task_index": 4, ' + base + b"}", "f.jsonl")
    c = parse_line(b'{"responses_create_params": {"input": "q"}, ' + base + b"}", "f.jsonl")
    assert a.task_key == "agent:ag#4"
    assert b.task_key == "file:f.jsonl#4"
    assert c.task_key == prompt_hash_key({"input": "q"}) and c.task_key.startswith("prompt:")


def test_truncation_read_from_incomplete_details():
    raw = b'{"response": {"status": null, "incomplete_details": {"reason": "max_output_tokens"}, "output": [{"type": "message", "role": "assistant", "content": "a"}]}, "reward": 0}'
    assert parse_line(raw).truncated == "max_output_tokens"


def test_sidecars_are_recognised():
    assert is_sidecar("x_materialized_inputs.jsonl") and is_sidecar("x_failures.jsonl")
    assert is_sidecar("x_reward_profiling.jsonl") and is_sidecar("x_aggregate_metrics.json")
    assert not is_sidecar("x_rollouts.jsonl") and not is_sidecar("rollouts.jsonl.gz")


# --------------------------------------------------------------------------- hostile lines
GOOD_TAIL = b'"response": {"output": [{"type": "message", "role": "assistant", "content": "a"}]}, "reward": 1'


@pytest.mark.parametrize("depth", [10_000, 1_000, 300])
def test_a_deeply_nested_line_is_one_reject(depth):
    """10,000 levels broke the stdlib fallback (RecursionError); 300 parse with
    orjson but cannot be written back (orjson writes 254 levels): each is a reject."""
    raw = b'{"x": ' + b"[" * depth + b"]" * depth + b", " + GOOD_TAIL + b"}"
    r = parse_line(raw)
    assert isinstance(r, Reject)
    assert r.reason == "too_deeply_nested" and str(MAX_DEPTH) in r.detail


@pytest.mark.parametrize("pad", [0, 20_000])  # short lines count bytes, long ones in numpy
def test_nesting_is_found_in_short_and_long_lines(pad):
    def line(depth: int) -> bytes:
        return (b'{"pad": "' + b"x" * pad + b'", "x": ' + b"[" * depth + b"{}" + b"]" * depth
                + b", " + GOOD_TAIL + b"}")  # fmt: skip

    deep = parse_line(line(300))
    assert isinstance(deep, Reject) and deep.reason == "too_deeply_nested"
    assert isinstance(parse_line(line(MAX_DEPTH - 3)), Rollout)


def test_nesting_up_to_the_limit_is_a_rollout():
    depth = MAX_DEPTH - 1  # the line's own object is a level
    r = parse_line(b'{"x": ' + b"[" * depth + b"]" * depth + b", " + GOOD_TAIL + b"}")
    assert isinstance(r, Rollout)


def test_a_deep_nan_line_is_a_reject_not_a_crash():
    # orjson refuses NaN, the stdlib fallback then meets the nesting
    depth = 990
    raw = b'{"r": NaN, "x": ' + b"[" * depth + b"]" * depth + b", " + GOOD_TAIL + b"}"
    r = parse_line(raw)
    assert isinstance(r, Reject) and r.reason == "too_deeply_nested"


def test_invalid_utf8_says_what_and_where():
    raw = b'{"x": "' + b"a" * 193 + b'\xff\xfe", ' + GOOD_TAIL + b"}"
    assert raw.index(b"\xff") == 200
    r = parse_line(raw)
    assert isinstance(r, Reject) and r.reason == "invalid_utf8"
    assert "byte 200" in r.detail and "ff fe" in r.detail
    assert "surrogates" not in r.detail and "column 1" not in r.detail


def test_utf8_encoded_surrogates_are_invalid_utf8():
    raw = b'{"x": "\xed\xa0\x80", ' + GOOD_TAIL + b"}"
    r = parse_line(raw)
    assert isinstance(r, Reject) and r.reason == "invalid_utf8" and "byte 7" in r.detail


# --------------------------------------------------------------------------- generated shapes
# The same checks as on the real fixtures, on lines built in the repo for every shape of
# the spec (gymray.samples.gym_shapes), so that they hold on a clone without ../shared.
from gymray.samples.gym_shapes import gym_tree, line, shapes  # noqa: E402


@pytest.mark.parametrize("name", sorted(shapes()))
def test_every_shape_of_the_spec_is_a_rollout_or_its_named_reject(name):
    row, outcome = shapes()[name]
    r = parse_line(line(row), "x.jsonl")
    assert (r.reason if isinstance(r, Reject) else "ok") == outcome
    if isinstance(r, Rollout):
        assert r.completion and all(m["role"] in ("user", "assistant", "tool", "system")
                                    for m in r.prompt + r.completion)  # fmt: skip


def test_every_generated_tree_line_is_counted_as_the_generator_says(tmp_path):
    tree = gym_tree(tmp_path)
    counts = collections.Counter()
    for rel in tree["rollouts"]:
        data = (tmp_path / rel).read_bytes()
        for raw in data.split(b"\n"):
            if raw:
                r = parse_line(raw, rel)
                counts[r.reason if isinstance(r, Reject) else "ok"] += 1
    assert counts == tree["expected"]
    # no sidecar is a rollouts file, and every rollouts file is named as upstream names them
    assert all(is_sidecar(s) for s in tree["sidecars"])
    assert all(rel.endswith("/data/example_rollouts.jsonl") for rel in tree["rollouts"])


def test_the_generated_placeholder_row_is_invalid_json(tmp_path):
    gym_tree(tmp_path)
    raw = (tmp_path / "resources_servers/tavily_search/data/example_rollouts.jsonl").read_bytes()
    placeholder = next(x for x in raw.split(b"\n") if x.startswith(b"<PLACEHOLDER"))
    r = parse_line(placeholder)
    assert isinstance(r, Reject) and r.reason == "invalid_json"


def test_shapes_convert_as_the_spec_says():
    def parsed(name, reasoning="drop"):
        return parse_line(line(shapes()[name][0]), "f.jsonl", reasoning)

    assert parsed("string_input").prompt == [{"role": "user", "content": "What is 2 + 2?"}]
    assert parsed("instructions").prompt[0] == {"role": "system", "content": "You are a tutor."}
    assert parsed("developer_role").prompt[0]["role"] == "system"
    # an empty reasoning summary leaves nothing to keep, whatever the mode
    msg = parsed("reasoning_without_summary", "reasoning_content").completion[-1]
    assert msg == {"role": "assistant", "content": "4"}
    kept = parsed("reasoning_with_summary", "reasoning_content").completion[-1]
    assert kept["reasoning_content"] == "2 and 2 make 4"
    # nested lists in the output and token ids on items are the same turn as plain items
    plain = parsed("string_input").completion
    assert parsed("nested_output_lists").completion == plain
    assert parsed("token_ids_on_items").completion == plain
    assert parsed("image_input").has_image and not parsed("string_input").has_image
    assert parsed("truncated").truncated == "max_output_tokens"
    assert parsed("status_null").truncated is None and parsed("status_missing").truncated is None
    assert parsed("int_reward").reward == 1.0 and isinstance(parsed("int_reward").reward, float)
    assert parsed("reward_minus_100").reward == -100.0
    # rollout keys out, the task's and verifier's fields kept as they are
    assert parsed("verifier_fields").extras["expected_answer"] == "4"
    assert "judge_evaluations" in parsed("verifier_fields").extras
    assert parsed("indices_and_agent").task_key == "agent:math_agent#3"
    assert parsed("indices_without_agent").task_key == "file:f.jsonl#3"
    assert parsed("agent_ref_name_only").task_key == "agent:m#2"
    assert parsed("string_input").task_key.startswith("prompt:")
    sim = parsed("user_simulator_turns").completion
    assert [m["role"] for m in sim] == ["assistant", "user", "assistant"]


def test_crlf_ends_are_whitespace_and_a_bom_is_a_named_reject():
    raw = line(shapes()["string_input"][0])
    assert isinstance(parse_line(raw + b"\r\n"), Rollout)
    r = parse_line(b"\xef\xbb\xbf" + raw)
    assert isinstance(r, Reject) and r.reason == "invalid_json" and "BOM" in r.detail


def test_hash64_is_keyed_blake2b_whatever_the_seed_and_order_of_calls():
    """Split coordinates and task hashes must not move between versions: hash64 is
    BLAKE2b-64 salted with the seed, however it is computed (a hasher per seed is
    kept and copied), for text and bytes, seeds in any order, repeats included."""

    def reference(data: bytes, seed: int) -> int:
        salt = seed.to_bytes(8, "little", signed=True) + bytes(8)
        digest = hashlib.blake2b(data, digest_size=8, salt=salt).digest()
        return int.from_bytes(digest, "little", signed=True)

    for seed in (0, 7, -3, 2**63 - 1, 0, 7):
        for text in ("agent::task-1", "é\ud800 surrogate", "", b"raw \x00 bytes", "agent::task-1"):
            data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
            assert hash64(text, seed) == reference(data, seed), (text, seed)
    assert unit_interval("agent::task-1", 7) == (reference(b"agent::task-1", 7) % 2**64) / 2**64
