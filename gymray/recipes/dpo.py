"""DPO: pairs of rollouts of one task, chosen (higher reward) vs rejected.

Pure functions over task groups (no Ray). Rewards are in whatever units the
environment uses (negative rewards exist): ``min_gap`` is in those units.
Ties never become pairs, and neither do identical completions.

What NeMo RL does with a pair (``preference_preprocessor``, DPO collate): it
renders ``context + completion`` through the chat template *without* tool
schemas, and scores only the final message of each completion; earlier
completion messages (tool calls, tool results) are unscored context. So the
tools a rollout could call are written into the context's system message
(``dpo.tools_in_system``), and pairs whose final messages are identical are
never made: they would teach nothing.
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

# The tool block of common tool-calling chat templates (Qwen2.5, Hermes), for a
# system message that must carry the tools when NeMo RL cannot pass them.
TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_FOOTER = "\n</tools>"


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
    tools_in_system: bool = Field(
        True,
        description="write the rollout's tool schemas into the context's system message "
        "(NeMo RL's preference path renders no tools)",
    )


def tools_message(context: list[dict], tools: list[dict]) -> list[dict]:
    """``context`` with the tool schemas in its system message (added if it has none)."""
    if not tools:
        return context
    block = TOOLS_HEADER + "\n".join(orjson.dumps(t).decode() for t in tools) + TOOLS_FOOTER
    if context and context[0]["role"] == "system" and isinstance(context[0]["content"], str):
        text = context[0]["content"]
        first = {**context[0], "content": f"{text}\n\n{block}" if text else block}
        return [first, *context[1:]]
    return [{"role": "system", "content": block}, *context]


def _candidate(
    m: Member, dpo: DPOSettings, chat: ChatSettings
) -> tuple[list[dict], list[dict]] | str:
    """(context, completion) of a usable rollout, or the filter reason."""
    r = m.rollout
    if dpo.drop_truncated and r.truncated:
        return "truncated"
    if r.has_image:
        return "has_images"  # NeMo RL's preference path loads no images
    messages = complete_conversation(r, chat)
    if isinstance(messages, str):
        return messages
    context, completion = messages[: len(r.prompt)], messages[len(r.prompt) :]
    if conversation_problem(context):
        return "tool_result_without_call"
    if dpo.format == "binary" and not _single_text(completion):
        return "not_single_assistant_text"
    if dpo.tools_in_system:
        context = tools_message(context, r.tools)
    return context, completion


def _single_text(completion: list[dict]) -> bool:
    return (
        len(completion) == 1
        and not completion[0].get("tool_calls")
        and isinstance(completion[0]["content"], str)
    )


def _hash(value) -> int:
    return hash64(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


@register
class DPO(Recipe):
    """Pairs within a task. A rollout's key is the hash of its context (prompt
    and tools: one task index can carry different prompts, and pairs are made
    within one context only), of its completion (identical completions never
    pair) and of the completion's final message (what DPO scores); the pairing
    itself needs nothing else but the rewards."""

    name = "dpo"
    help = "preference pairs for DPO (NeMo RL examples/run_dpo.py)"
    settings = DPOSettings
    entrypoints = {
        "preference": Entrypoint("examples/run_dpo.py", "examples/configs/dpo.yaml"),
        "binary": Entrypoint("examples/run_dpo.py", "examples/configs/dpo.yaml"),
    }
    # DPO scores the final message only: pairs must differ there.
    scores_final_message_only = True

    @property
    def dpo(self) -> DPOSettings:
        return self.section

    def candidate(self, m: Member) -> tuple[list[dict], list[dict]] | str:
        return _candidate(m, self.dpo, self.chat)

    def summarize(self, m: Member):
        c = self.candidate(m)
        if isinstance(c, str):
            return c
        context, completion = c
        return [_hash([context, m.rollout.tools]), _hash(completion), _hash(completion[-1])]

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
            elif not self._pair(group, self.dpo, result) and len(group) > 1:
                result.notes += self._what_would_pair(group)
        return result

    def _pair(self, group: list[Key], dpo: DPOSettings, result: GroupResult) -> bool:
        return _pair_group(group, dpo, result, self.scores_final_message_only)

    def _what_would_pair(self, group: list[Key]) -> list[str]:
        """Settings under which this unpaired task would pair, found by deciding it
        again with them (the report's hint names a change that in fact makes pairs)."""
        notes = []
        if self.dpo.strategy == "stratified":
            same = self.dpo.model_copy(update={"strategy": "same_prompt"})
            if self._pair(group, same, GroupResult()):
                notes.append("would_pair:dpo.strategy=same_prompt")
        gaps = [
            hi.reward - lo.reward
            for hi in group
            for lo in group
            if hi.reward > lo.reward and _differ(hi, lo, self.scores_final_message_only)
        ]
        if gaps:
            gap = _round_down(max(gaps))
            relaxed = self.dpo.model_copy(update={"strategy": "same_prompt", "min_gap": gap})
            if self.dpo.min_gap > gap and self._pair(group, relaxed, GroupResult()):
                notes.append(f"would_pair_at_min_gap:{gap!r}")
        return notes

    def build(self, members: list[Member], params: dict) -> dict:
        hi, lo = members
        chosen, rejected = (self.candidate(m) for m in (hi, lo))
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise RuntimeError(f"rollout changed between reads: {hi.source} / {lo.source}")
        return _record((hi, *chosen), (lo, *rejected), params["gap"], self.dpo)

    value_name = "reward_gap"

    def value(self, record: dict) -> float | None:
        return record["meta"]["reward_gap"]

    def notes(self, record: dict) -> list[str]:
        return _content_notes(record)

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        return explain_pairs(self.name, self.dpo, outcome)


def _round_down(x: float) -> float:
    """``x`` to 3 significant digits, never above it (a suggested min_gap must pair)."""
    value = float(f"{x:.3g}")
    while value > x:
        x -= abs(x) * 1e-3
        value = float(f"{x:.3g}")
    return value


def _differ(a: Key, b: Key, final_only: bool) -> bool:
    return a.summary[1] != b.summary[1] and (not final_only or a.summary[2] != b.summary[2])


def _pair_group(group: list[Key], dpo: DPOSettings, result: GroupResult, final_only: bool) -> bool:
    """Pair one context's rollouts into ``result``; False when no pair was made."""
    if len(group) == 1:
        result.drop(group[0], "single_rollout_task")
        return False
    if dpo.strategy == "same_prompt":
        highs = lows = group
    else:
        highs = [k for k in group if k.reward >= dpo.high_threshold]
        lows = [k for k in group if k.reward <= dpo.low_threshold]
    candidates, identical, same_final = [], False, False
    for hi in highs:
        for lo in lows:
            gap = hi.reward - lo.reward
            if gap <= 0 or (dpo.strategy == "same_prompt" and gap < dpo.min_gap):
                continue
            if hi.summary[1] == lo.summary[1]:
                identical = True
                continue
            if final_only and hi.summary[2] == lo.summary[2]:
                same_final = True
                continue
            candidates.append((-gap, hi.index, lo.index))
    if not candidates:
        reason = _no_pair_reason(group, highs, lows, identical, same_final, dpo)
        for k in group:
            result.drop(k, reason)
        return False
    candidates.sort()
    limit = 1 if dpo.pairing == "best_vs_worst" else dpo.max_pairs_per_task
    by_index = {k.index: k for k in group}
    for neg_gap, hi, lo in candidates[:limit]:
        result.use(by_index[hi])
        result.use(by_index[lo])
        result.plans.append((hi, [hi, lo], {"gap": -neg_gap}))
    for k in group:
        result.drop(k, "not_selected")
    return True


def _no_pair_reason(group, highs, lows, identical: bool, same_final: bool, dpo) -> str:
    rewards = {k.reward for k in group}
    if len(rewards) == 1:
        return "tied_rewards"
    if identical:
        return "identical_completions"
    if same_final:
        return "identical_scored_messages"
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


def _content_notes(record: dict) -> list[str]:
    messages = list(record.get("context") or record.get("prompt") or [])
    for c in record.get("completions") or ():
        messages += c["completion"]
    if any(m.get("tool_calls") for m in messages if isinstance(m, dict)):
        return ["content:tool_calls"]
    return []


# Why no pair, in the user's words, and the change that would help. The main
# cause (most rollouts) comes first.
_CAUSES = {
    "single_rollout_task": "{n} rollouts are the only usable rollout of their task: collect "
    "several per task (NeMo Gym num_repeats >= 2)",
    "prompt_differs_within_task": "{n} rollouts share a task index with others but not their "
    "prompt (the environment draws a new initial state per rollout), and a pair needs one "
    "context: collect repeats of the same prompt, or use SFT/GRPO on these",
    "tied_rewards": "{n} rollouts are in tasks whose rollouts all scored the same: nothing to prefer",
    "identical_completions": "{n} rollouts are in tasks whose differently scored rollouts gave "
    "identical completions (sampling at temperature 0, or a stochastic verifier): no setting "
    "makes pairs of them; collect with temperature > 0",
    "identical_scored_messages": "{n} rollouts are in tasks whose rollouts differ only before "
    "their final message, the only one DPO scores: nothing to prefer there",
    "not_single_assistant_text": "{n} rollouts have tool calls or several turns, which "
    "{algo}.format=binary cannot hold: use {algo}.format=preference",
    "has_images": "{n} rollouts have images, which NeMo RL's preference training cannot load",
    "incomplete_trajectory": "{n} rollouts do not end on a complete assistant turn",
}


def explain_pairs(algo: str, dpo: DPOSettings, outcome: Outcome) -> tuple[list[str], list[str]]:
    """The report's pairs section, and warnings when no pair was made."""
    per_task = outcome.per_task
    c = outcome.counts
    pairs = c["records"]["train"] + c["records"]["val"]
    several = per_task[per_task[:, 0] >= 2]  # columns: rollouts, reward sum, min, max
    gaps = several[:, 3] - several[:, 2] if len(several) else np.zeros(1)
    lines = [
        "## Pairs",
        "",
        f"{pairs} pairs (strategy `{dpo.strategy}`, pairing `{dpo.pairing}`, format "
        f"`{dpo.format}`) from {len(per_task)} tasks, {len(several)} of them with two or "
        "more rollouts.",
        f"Reward spread within a task: widest {gaps.max():.4g}, median {np.median(gaps):.4g}; "
        f"`{algo}.min_gap` = {dpo.min_gap} (in the environment's reward units).",
    ]
    if pairs:
        return ["\n".join(lines)], []
    filtered = c["filtered"]
    causes = sorted(
        ((n, r) for r, n in filtered.items() if r in _CAUSES or r == "gap_below_min_gap"),
        key=lambda x: (-x[0], x[1]),
    )
    hints = []
    for n, reason in causes:
        if reason == "gap_below_min_gap":
            hints.append(_gap_hint(algo, dpo, n, outcome.notes))
        else:
            hints.append(_CAUSES[reason].format(n=n, algo=algo))
    same = outcome.notes.get("would_pair:dpo.strategy=same_prompt")
    if same:
        hints.append(f"{algo}.strategy=same_prompt would make {same} pairs (re-decided)")
    if not hints:
        hints = ["no rollout was usable (see the filtered and rejected reasons above)"]
    lines += ["", "### Why no pairs", ""] + [f"- {h}" for h in hints]
    return ["\n".join(lines)], [f"no {algo.upper()} pairs: {hints[0]}"]


def _gap_hint(algo: str, dpo: DPOSettings, n: int, notes: dict) -> str:
    """The smallest change of min_gap that makes pairs, as re-decided per task."""
    would = sorted(
        (float(k.split(":", 1)[1]), v)
        for k, v in notes.items()
        if k.startswith("would_pair_at_min_gap:")
    )
    text = f"{n} rollouts are in tasks whose reward gaps (between different completions) are below {algo}.min_gap={dpo.min_gap}"
    if not would:
        return text
    tasks = sum(v for _, v in would)
    at = would[0][0]
    return f"{text}: {algo}.min_gap={at:g} would make pairs in {tasks} tasks (re-decided)"
