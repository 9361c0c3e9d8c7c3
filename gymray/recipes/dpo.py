"""DPO: pairs of rollouts of one task, chosen (higher reward) vs rejected.

Pure functions over task groups (no Ray). Rewards are in whatever units the
environment uses (negative rewards exist): ``min_gap`` is in those units.
Ties never become pairs, and neither do identical completions.
"""

from __future__ import annotations

import orjson

from gymray.config import ChatSettings, DPOSettings
from gymray.recipes.common import GroupResult, Member, conversation_problem
from gymray.recipes.sft import complete_conversation


def _candidate(
    m: Member, dpo: DPOSettings, chat: ChatSettings
) -> tuple[list[dict], list[dict]] | str:
    """(context, completion) of a usable rollout, or the filter reason."""
    r = m.rollout
    if dpo.drop_truncated and r.truncated:
        return "truncated"
    if chat.images == "filter" and r.has_image:
        return "has_images"
    messages = complete_conversation(r, chat)
    if isinstance(messages, str):
        return messages
    context, completion = messages[: len(r.prompt)], messages[len(r.prompt) :]
    if conversation_problem(context):
        return "tool_result_without_call"
    if dpo.format == "binary" and not _single_text(completion):
        return "not_single_assistant_text"
    return context, completion


def _single_text(completion: list[dict]) -> bool:
    return (
        len(completion) == 1
        and not completion[0].get("tool_calls")
        and isinstance(completion[0]["content"], str)
    )


def dpo_pairs(members: list[Member], dpo: DPOSettings, chat: ChatSettings) -> GroupResult:
    result = GroupResult()
    usable: dict[bytes, list[tuple[Member, list, list]]] = {}
    for m in members:
        c = _candidate(m, dpo, chat)
        if isinstance(c, str):
            result.drop(m, c)
            continue
        # One task index can carry different prompts: pair only within one context.
        key = orjson.dumps([c[0], m.rollout.tools], option=orjson.OPT_SORT_KEYS)
        usable.setdefault(key, []).append((m, c[0], c[1]))
    for group in usable.values():
        _pair_group(group, dpo, result)
    return result


def _pair_group(
    group: list[tuple[Member, list, list]], dpo: DPOSettings, result: GroupResult
) -> None:
    if len(group) == 1:
        result.drop(group[0][0], "single_rollout_task")
        return
    if dpo.strategy == "same_prompt":
        highs = lows = group
    else:
        highs = [g for g in group if g[0].rollout.reward >= dpo.high_threshold]
        lows = [g for g in group if g[0].rollout.reward <= dpo.low_threshold]
    candidates, identical = [], False
    for hi in highs:
        for lo in lows:
            gap = hi[0].rollout.reward - lo[0].rollout.reward
            if gap <= 0 or (dpo.strategy == "same_prompt" and gap < dpo.min_gap):
                continue
            if hi[2] == lo[2]:
                identical = True
                continue
            candidates.append((-gap, hi[0].index, lo[0].index, hi, lo))
    if not candidates:
        reason = _no_pair_reason(group, highs, lows, identical, dpo)
        for m, _, _ in group:
            result.drop(m, reason)
        return
    candidates.sort(key=lambda c: c[:3])
    limit = 1 if dpo.pairing == "best_vs_worst" else dpo.max_pairs_per_task
    for neg_gap, _, _, hi, lo in candidates[:limit]:
        result.use(hi[0])
        result.use(lo[0])
        result.records.append((_record(hi, lo, -neg_gap, dpo), hi[0].index))
    for m, _, _ in group:
        result.drop(m, "not_selected")


def _no_pair_reason(group, highs, lows, identical: bool, dpo: DPOSettings) -> str:
    rewards = {g[0].rollout.reward for g in group}
    if len(rewards) == 1:
        return "tied_rewards"
    if identical:
        return "identical_completions"
    if dpo.strategy == "stratified":
        if not highs:
            return "no_reward_above_high_threshold"
        if not lows:
            return "no_reward_below_low_threshold"
    return "gap_below_min_gap"


def _record(hi, lo, gap: float, dpo: DPOSettings) -> dict:
    (mh, context, chosen), (ml, _, rejected) = hi, lo
    r = mh.rollout
    meta = {
        "task": r.task_key,
        "source": [{"file": mh.file, "line": mh.line}, {"file": ml.file, "line": ml.line}],
        "chosen_reward": r.reward,
        "rejected_reward": ml.rollout.reward,
        "reward_gap": gap,
    }
    if r.agent is not None:
        meta["agent"] = r.agent
    if r.task_index is not None:
        meta["task_index"] = r.task_index
    if dpo.format == "preference":
        return {
            "context": context,
            "completions": [{"rank": 0, "completion": chosen}, {"rank": 1, "completion": rejected}],
            "meta": meta,
        }
    return {
        "prompt": context,
        "chosen": chosen[0]["content"],
        "rejected": rejected[0]["content"],
        "chosen_reward": r.reward,
        "rejected_reward": ml.rollout.reward,
        "reward_gap": gap,
        "meta": meta,
    }
