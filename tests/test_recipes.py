"""DPO pairing and GRPO task rules on hand-made groups (pure, no Ray)."""

from __future__ import annotations

import pytest

from gymray.chat import ChatSettings
from gymray.config import Settings
from gymray.recipes.base import Context, Member
from gymray.recipes.dpo import DPO, DPOSettings
from gymray.recipes.grpo import GRPO, GRPOSettings
from gymray.recipes.sft import SFTSettings, sft_record
from gymray.rollouts import Rollout

CHAT = ChatSettings()


def dpo_pairs(members, dpo: DPOSettings, chat: ChatSettings):
    return DPO(Settings(algo="dpo", dpo=dpo, chat=chat), Context([]))(members)


def grpo_prompts(members, grpo: GRPOSettings, fmt: str, tasks: dict | None = None):
    recipe = GRPO(Settings(algo="grpo", grpo=grpo.model_copy(update={"format": fmt})), Context([]))
    recipe.tasks = tasks
    return recipe(members)


def member(i: int, reward: float, answer: str | None = None, prompt: str = "q", **extra) -> Member:
    r = Rollout(
        reward=reward,
        task_key="agent:a#1",
        agent="a",
        task_index=1,
        rollout_index=i,
        prompt=[{"role": "user", "content": prompt}],
        completion=[
            {"role": "assistant", "content": answer if answer is not None else f"answer {i}"}
        ],
        tools=[],
        has_image=False,
        truncated=None,
        request={"input": prompt, "temperature": 0.7, "tools": []},
        extras=extra,
        agent_ref={"type": "responses_api_agents", "name": "a"},
    )
    return Member(r, "f.jsonl", i + 1, i)


def statuses(result, members):
    return [result.status.get(m.index) for m in members]


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


def test_grpo_pass_rate_and_formats():
    ms = [member(0, 1.0, expected_answer=42), member(1, 0.0), member(2, 0.0), member(3, 1.0)]
    res = grpo_prompts(ms, GRPOSettings(pass_rate=(0.1, 0.9)), "math")
    rec = res.records[0][0]
    assert rec["input"] == "q" and rec["ground_truth"] == "42"
    assert rec["meta"]["pass_rate"] == 0.5 and rec["meta"]["ground_truth_source"] == "rollout"
    assert len(rec["meta"]["source"]) == 4
    assert grpo_prompts(ms, GRPOSettings(pass_rate=(0.6, 1.0)), "math").status[0] == (
        "filtered",
        "pass_rate_out_of_range",
    )
    no_gt = [member(0, 1.0)]
    assert grpo_prompts(no_gt, GRPOSettings(), "math").status[0] == ("filtered", "no_ground_truth")
    gt = grpo_prompts(no_gt, GRPOSettings(), "math", {(1, None): {"expected_answer": "7"}})
    assert (
        gt.records[0][0]["ground_truth"] == "7"
        and gt.records[0][0]["meta"]["ground_truth_source"] == "tasks_file"
    )
    gym = grpo_prompts(ms, GRPOSettings(), "nemo_gym").records[0][0]
    assert gym["responses_create_params"] == {"input": "q", "tools": []}  # sampling params dropped
    assert (
        gym["agent_ref"] == {"type": "responses_api_agents", "name": "a"}
        and gym["expected_answer"] == 42
    )


def test_grpo_reward_threshold_keeps_the_seed_behaviour():
    ms = [member(0, -1.0), member(1, 0.0)]
    res = grpo_prompts(ms, GRPOSettings(), "nemo_gym")
    assert res.status == {0: ("filtered", "below_reward_threshold"), 1: ("used", None)}


def test_sft_threshold_and_truncation():
    m = member(0, 0.9)
    assert sft_record(m.rollout, m.source, SFTSettings(), CHAT) == (None, "below_reward_threshold")
    m.rollout.truncated = "max_output_tokens"
    assert sft_record(m.rollout, m.source, SFTSettings(reward_threshold=None), CHAT) == (
        None,
        "truncated",
    )
