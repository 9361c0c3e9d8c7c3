"""DPO pairing on hand-made groups (pure, no Ray)."""

from __future__ import annotations

import pytest
from support import member, statuses

from gymray.chat import ChatSettings
from gymray.config import Settings
from gymray.recipes.base import Context
from gymray.recipes.dpo import DPO, DPOSettings

CHAT = ChatSettings()


def dpo_pairs(members, dpo: DPOSettings, chat: ChatSettings = CHAT):
    return DPO(Settings(algo="dpo", dpo=dpo, chat=chat), Context([]))(members)


def test_best_vs_worst_one_pair_per_task_widest_gap():
    ms = [member(0, 0.5), member(1, 1.0), member(2, 0.0), member(3, 0.9)]
    res = dpo_pairs(ms, DPOSettings(), CHAT)
    assert len(res.records) == 1
    rec, anchor = res.records[0]
    assert anchor == 1
    assert rec["completions"] == [
        {"rank": 0, "completion": [{"role": "assistant", "content": "answer 1"}]},
        {"rank": 1, "completion": [{"role": "assistant", "content": "answer 2"}]},
    ]
    assert rec["context"] == [{"role": "user", "content": "q"}]
    assert rec["meta"]["reward_gap"] == 1.0 and [s["line"] for s in rec["meta"]["source"]] == [2, 3]
    assert statuses(res, ms) == [
        ("filtered", "not_selected"),
        ("used", None),
        ("used", None),
        ("filtered", "not_selected"),
    ]


def test_all_pairs_capped_and_ordered_by_gap_with_negative_rewards():
    ms = [member(0, -10.0), member(1, -2.0), member(2, 5.0), member(3, 4.9)]
    res = dpo_pairs(ms, DPOSettings(pairing="all", max_pairs_per_task=3, min_gap=0.5), CHAT)
    gaps = [r["meta"]["reward_gap"] for r, _ in res.records]
    assert gaps == [15.0, 14.9, 8.0]  # -2 vs -10 beats 5 vs -2
    assert all(r["meta"]["chosen_reward"] > r["meta"]["rejected_reward"] for r, _ in res.records)


@pytest.mark.parametrize(
    ("members", "settings", "reason"),
    [
        ([member(0, 1.0)], DPOSettings(), "single_rollout_task"),
        ([member(0, 1.0), member(1, 1.0)], DPOSettings(), "tied_rewards"),
        ([member(0, 1.0), member(1, 0.9)], DPOSettings(min_gap=0.2), "gap_below_min_gap"),
        ([member(0, 1.0, "same"), member(1, 0.0, "same")], DPOSettings(), "identical_completions"),
        (
            [member(0, 0.6), member(1, 0.0)],
            DPOSettings(strategy="stratified"),
            "no_reward_above_high_threshold",
        ),
        (
            [member(0, 0.9), member(1, 0.5)],
            DPOSettings(strategy="stratified"),
            "no_reward_below_low_threshold",
        ),
    ],
)
def test_no_pair_reasons(members, settings, reason):
    res = dpo_pairs(members, settings, CHAT)
    assert not res.records
    assert statuses(res, members) == [("filtered", reason)] * len(members)


def test_stratified_ignores_min_gap_and_pairs_across_thresholds():
    ms = [member(0, 0.75), member(1, 0.4), member(2, 0.5)]
    res = dpo_pairs(ms, DPOSettings(strategy="stratified", min_gap=10), CHAT)
    assert len(res.records) == 1
    assert (
        res.records[0][0]["meta"]["chosen_reward"] == 0.75
        and res.records[0][0]["meta"]["rejected_reward"] == 0.4
    )
    assert statuses(res, ms)[2] == ("filtered", "not_selected")


def test_pairs_only_within_one_prompt():
    ms = [member(0, 1.0, prompt="p1"), member(1, 0.0, prompt="p2")]
    res = dpo_pairs(ms, DPOSettings(), CHAT)
    assert not res.records and statuses(res, ms) == [("filtered", "prompt_differs_within_task")] * 2
    ms.append(member(2, 0.0, prompt="p1"))  # now p1 has two rollouts: they pair
    res = dpo_pairs(ms, DPOSettings(), CHAT)
    assert statuses(res, ms) == [
        ("used", None),
        ("filtered", "prompt_differs_within_task"),
        ("used", None),
    ]
    assert [anchor for _, anchor in res.records] == [0]
    assert dpo_pairs(ms[:1], DPOSettings(), CHAT).status[0] == ("filtered", "single_rollout_task")


def test_binary_needs_single_text_and_gives_strings():
    tool = member(0, 1.0)
    tool.rollout.completion = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        {"role": "assistant", "content": "done"},
    ]
    ms = [tool, member(1, 0.0), member(2, 0.8)]
    res = dpo_pairs(ms, DPOSettings(format="binary"), CHAT)
    assert statuses(res, ms)[0] == ("filtered", "not_single_assistant_text")
    rec = res.records[0][0]
    assert (rec["chosen"], rec["rejected"], rec["chosen_reward"], rec["rejected_reward"]) == (
        "answer 2",
        "answer 1",
        0.8,
        0.0,
    )
    assert rec["reward_gap"] == pytest.approx(0.8) and rec["prompt"] == [
        {"role": "user", "content": "q"}
    ]


def with_tool_call(m, answer="done"):
    m.rollout.completion = [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "found it"},
        {"role": "assistant", "content": answer},
    ]  # fmt: skip
    m.rollout.tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    return m


def test_the_tools_a_rollout_could_call_are_in_the_context():
    """NeMo RL's preference path renders no tool schemas: they go in the system message."""
    ms = [with_tool_call(member(0, 1.0)), with_tool_call(member(1, 0.0), "gave up")]
    rec = dpo_pairs(ms, DPOSettings()).records[0][0]
    system = rec["context"][0]
    assert system["role"] == "system" and '"name":"lookup"' in system["content"]
    assert rec["context"][1:] == [{"role": "user", "content": "q"}]
    ms[0].rollout.prompt = [{"role": "system", "content": "Be brief."}, *ms[0].rollout.prompt]
    ms[1].rollout.prompt = list(ms[0].rollout.prompt)
    rec = dpo_pairs(ms, DPOSettings()).records[0][0]
    assert rec["context"][0]["content"].startswith("Be brief.\n\n# Tools")
    off = dpo_pairs(ms, DPOSettings(tools_in_system=False)).records[0][0]
    assert off["context"][0] == {"role": "system", "content": "Be brief."}


def test_binary_prompts_carry_the_tools_the_answers_were_given_with():
    """Plain-text answers may still have been offered tools: a binary prompt carries
    their schemas, as the preference format's context does."""
    ms = [member(0, 1.0), member(1, 0.0)]
    for m in ms:
        m.rollout.tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    rec = dpo_pairs(ms, DPOSettings(format="binary")).records[0][0]
    system = rec["prompt"][0]
    assert system["role"] == "system" and '"name":"lookup"' in system["content"]
    assert rec["prompt"][1:] == [{"role": "user", "content": "q"}]
    assert (rec["chosen"], rec["rejected"]) == ("answer 0", "answer 1")


def test_pairs_whose_scored_messages_are_identical_are_not_made():
    """DPO scores only the final message of each completion: two completions that
    differ before it but end alike teach nothing."""
    a = with_tool_call(member(0, 1.0), "same ending")
    b = with_tool_call(member(1, 0.0), "same ending")
    b.rollout.completion[1] = {"role": "tool", "tool_call_id": "c", "content": "other result"}
    res = dpo_pairs([a, b], DPOSettings())
    assert not res.records
    assert statuses(res, [a, b]) == [("filtered", "identical_scored_messages")] * 2
    # a reward model scores the whole sequence: the same pair is a valid RM pair
    from gymray.recipes.rm import RM

    rm = RM(Settings(algo="rm"), Context([]))([a, b])
    assert len(rm.records) == 1


def test_an_unpaired_task_says_which_min_gap_would_pair_it_found_by_deciding_again():
    ms = [member(0, 1.0), member(1, 0.9), member(2, 0.95, answer="answer 1")]
    res = dpo_pairs(ms, DPOSettings(min_gap=0.5))
    assert not res.records
    # 1.0 vs 0.9 differ (a gap of 0.0999..., in floats); 0.95 ends like member 1
    (note,) = res.notes
    name, value = note.split(":")
    assert name == "would_pair_at_min_gap" and 0.099 <= float(value) <= 1.0 - 0.9
    relaxed = dpo_pairs(ms, DPOSettings(min_gap=float(value)))
    assert len(relaxed.records) == 1


def test_a_rollout_with_broken_tool_arguments_is_filtered_and_never_paired():
    ms = [member(0, 1.0), member(1, 0.0), member(2, 0.5)]
    ms[0].rollout.completion = [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        {"role": "assistant", "content": "best"},
    ]  # fmt: skip
    res = dpo_pairs(ms, DPOSettings(), CHAT)
    assert statuses(res, ms) == [
        ("filtered", "invalid_tool_arguments"),
        ("used", None),
        ("used", None),
    ]
