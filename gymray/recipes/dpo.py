"""DPO: pairs of rollouts of one task, chosen (higher reward) vs rejected.

Pure functions over task groups (no Ray). Rewards are in whatever units the
environment uses (negative rewards exist): ``min_gap`` is in those units.
Ties never become pairs, and neither do identical completions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import orjson
from pydantic import Field

from gymray.chat import ChatSettings
from gymray.recipes.base import (
    Entrypoint,
    GroupResult,
    Key,
    Member,
    Outcome,
    Recipe,
    Section,
    conversation_problem,
    register,
)
from gymray.recipes.sft import complete_conversation
from gymray.rollouts import hash64


class DPOSettings(Section):
    strategy: Literal["same_prompt", "stratified"] = Field(
        "same_prompt",
        description="same_prompt: pairs whose reward gap >= min_gap; stratified: chosen "
        "reward >= high_threshold, rejected <= low_threshold",
    )
    min_gap: float = Field(0.2, ge=0.0, description="in the environment's own reward units")
    pairing: Literal["best_vs_worst", "all"] = Field(
        "best_vs_worst", description="one pair a task (widest gap), or all qualifying pairs"
    )
    max_pairs_per_task: int = Field(4, ge=1, description="with pairing=all: widest gaps first")
    high_threshold: float = Field(0.7, description="stratified: lowest chosen reward")
    low_threshold: float = Field(0.4, description="stratified: highest rejected reward")
    format: Literal["preference", "binary"] = Field(
        "preference",
        description="preference ({context, completions}: tool calls and multi-turn kept) or "
        "binary ({prompt, chosen, rejected} strings: single assistant text only)",
    )
    drop_truncated: bool = Field(False, description="drop responses cut by max_output_tokens")


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


@register
class DPO(Recipe):
    """Pairs within a task. A rollout's key is the hash of its context (prompt
    and tools: one task index can carry different prompts, and pairs are made
    within one context only) and of its completion (identical completions
    never pair); the pairing itself needs nothing else but the rewards."""

    name = "dpo"
    help = "preference pairs for DPO (NeMo RL examples/run_dpo.py)"
    settings = DPOSettings
    entrypoints = {
        "preference": Entrypoint("examples/run_dpo.py", "examples/configs/dpo.yaml"),
        "binary": Entrypoint("examples/run_dpo.py", "examples/configs/dpo.yaml"),
    }

    @property
    def dpo(self) -> DPOSettings:
        return self.section

    def candidate(self, m: Member) -> tuple[list[dict], list[dict]] | str:
        return _candidate(m, self.dpo, self.chat)

    def summarize(self, m: Member):
        c = self.candidate(m)
        if isinstance(c, str):
            return c
        context = orjson.dumps([c[0], m.rollout.tools], option=orjson.OPT_SORT_KEYS)
        return [hash64(context), hash64(orjson.dumps(c[1], option=orjson.OPT_SORT_KEYS))]

    def decide(self, keys: list[Key]) -> GroupResult:
        result = GroupResult()
        usable: dict[int, list[Key]] = {}
        for k in keys:
            if isinstance(k.summary, str):
                result.drop(k, k.summary)
            else:
                usable.setdefault(k.summary[0], []).append(k)
        for group in usable.values():
            if len(group) == 1 and len(usable) > 1:
                # the task has other usable rollouts, all with other prompts
                # (e.g. a game whose initial state is drawn per rollout)
                result.drop(group[0], "prompt_differs_within_task")
            else:
                _pair_group(group, self.dpo, result)
        return result

    def build(self, members: list[Member], params: dict) -> dict:
        hi, lo = members
        chosen, rejected = (self.candidate(m) for m in (hi, lo))
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise RuntimeError(f"rollout changed between reads: {hi.source} / {lo.source}")
        return _record((hi, *chosen), (lo, *rejected), params["gap"], self.dpo)

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        dpo = self.dpo
        per_task = outcome.per_task
        c = outcome.counts
        pairs = c["records"]["train"] + c["records"]["val"]
        tasks = len(per_task)
        several = per_task[per_task[:, 0] >= 2]  # columns: rollouts, reward sum, min, max
        multi = len(several)
        gaps = several[:, 3] - several[:, 2] if multi else np.zeros(1)
        lines = [
            "## Pairs",
            "",
            f"{pairs} pairs (strategy `{dpo.strategy}`, pairing `{dpo.pairing}`, format `{dpo.format}`) "
            f"from {tasks} tasks, {multi} of them with two or more rollouts.",
            f"Widest reward gap within a task: {gaps.max():.4g} (median {np.median(gaps):.4g}); "
            f"`dpo.min_gap` = {dpo.min_gap} (in the environment's reward units).",
        ]
        hints = []
        if pairs == 0:
            filtered = c["filtered"]
            if tasks and multi == 0:
                hints.append(
                    "every task has a single rollout: collect several per task (NeMo Gym num_repeats >= 2)"
                )
            if filtered.get("prompt_differs_within_task"):
                hints.append(
                    f"{filtered['prompt_differs_within_task']} rollouts share a task index with others but "
                    "not their prompt (the environment draws a new initial state per rollout), and a pair "
                    "needs one context: collect repeats of the same prompt, or use SFT/GRPO on these"
                )
            if filtered.get("tied_rewards"):
                hints.append(
                    f"{filtered['tied_rewards']} rollouts are in tasks whose rollouts all scored the same: nothing to prefer"
                )
            if dpo.strategy == "same_prompt" and filtered.get("gap_below_min_gap"):
                hints.append(
                    f"no task has a reward gap >= dpo.min_gap={dpo.min_gap}; the widest is {gaps.max():.4g}: try dpo.min_gap={gaps.max():.4g}"
                )
            if dpo.strategy == "stratified" and tasks:
                hi = per_task[:, 3].max()
                lo = per_task[:, 2].min()
                if hi < dpo.high_threshold:
                    hints.append(
                        f"no reward reaches dpo.high_threshold={dpo.high_threshold}; the highest is {hi:.4g}"
                    )
                if lo > dpo.low_threshold:
                    hints.append(
                        f"no reward is <= dpo.low_threshold={dpo.low_threshold}; the lowest is {lo:.4g}"
                    )
                if hi >= dpo.high_threshold and lo <= dpo.low_threshold:
                    hints.append(
                        "high and low rewards never occur in the same task: try dpo.strategy=same_prompt"
                    )
            if filtered.get("identical_completions"):
                hints.append(
                    "rollouts of a task gave identical completions: sample with temperature > 0"
                )
            if filtered.get("not_single_assistant_text"):
                hints.append(
                    "dpo.format=binary needs single assistant text completions: use dpo.format=preference for tool calls and multi-turn"
                )
            lines += ["", "### Why no pairs", ""] + [
                f"- {h}"
                for h in hints
                or ["no rollout was usable (see the filtered and rejected reasons above)"]
            ]
        return ["\n".join(lines)], [f"no DPO pairs: {h}" for h in hints]


def _pair_group(group: list[Key], dpo: DPOSettings, result: GroupResult) -> None:
    if len(group) == 1:
        result.drop(group[0], "single_rollout_task")
        return
    if dpo.strategy == "same_prompt":
        highs = lows = group
    else:
        highs = [k for k in group if k.reward >= dpo.high_threshold]
        lows = [k for k in group if k.reward <= dpo.low_threshold]
    candidates, identical = [], False
    for hi in highs:
        for lo in lows:
            gap = hi.reward - lo.reward
            if gap <= 0 or (dpo.strategy == "same_prompt" and gap < dpo.min_gap):
                continue
            if hi.summary[1] == lo.summary[1]:
                identical = True
                continue
            candidates.append((-gap, hi.index, lo.index))
    if not candidates:
        reason = _no_pair_reason(group, highs, lows, identical, dpo)
        for k in group:
            result.drop(k, reason)
        return
    candidates.sort()
    limit = 1 if dpo.pairing == "best_vs_worst" else dpo.max_pairs_per_task
    by_index = {k.index: k for k in group}
    for neg_gap, hi, lo in candidates[:limit]:
        result.use(by_index[hi])
        result.use(by_index[lo])
        result.plans.append((hi, [hi, lo], {"gap": -neg_gap}))
    for k in group:
        result.drop(k, "not_selected")


def _no_pair_reason(group, highs, lows, identical: bool, dpo: DPOSettings) -> str:
    rewards = {k.reward for k in group}
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
