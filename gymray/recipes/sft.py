"""SFT: one rollout -> one transcript record, or a filter reason.

Pure functions over canonical rollouts (no Ray).
"""

from __future__ import annotations

from gymray.chat import trim_to_complete, unanswered_tool_calls
from gymray.config import ChatSettings, SFTSettings
from gymray.recipes.common import (
    GroupedRecipe,
    GroupResult,
    Key,
    Member,
    conversation_problem,
    meta_of,
)
from gymray.rollouts import Rollout


def sft_record(
    r: Rollout, source: tuple[str, int], sft: SFTSettings, chat: ChatSettings
) -> tuple[dict | None, str | None]:
    """(record, None) when the rollout is kept, else (None, filter reason)."""
    if sft.reward_threshold is not None and r.reward < sft.reward_threshold:
        return None, "below_reward_threshold"
    if sft.drop_truncated and r.truncated:
        return None, "truncated"
    if chat.images == "filter" and r.has_image:
        return None, "has_images"
    messages = complete_conversation(r, chat)
    if isinstance(messages, str):
        return None, messages
    meta = meta_of(r, [source])
    if sft.format == "openai":
        return {"messages": messages, "tools": r.tools, "meta": meta}, None
    simple = simple_pair(messages)
    if simple is None:
        return None, "not_single_turn_text"
    return {"input": simple[0], "output": simple[1], "meta": meta}, None


def complete_conversation(r: Rollout, chat: ChatSettings) -> list[dict] | str:
    """Prompt + completion ending on an assistant turn with every tool call answered,
    trimmed or refused per ``chat.incomplete``; a string is the filter reason."""
    if not any(m["role"] == "assistant" for m in r.completion):
        return "no_assistant_output"
    messages = r.prompt + r.completion
    problem = conversation_problem(messages)
    if problem:
        return problem
    if (
        messages[-1]["role"] != "assistant"
        or messages[-1].get("tool_calls")
        or unanswered_tool_calls(messages)
    ):
        if chat.incomplete == "filter":
            return "incomplete_trajectory"
        trimmed = trim_to_complete(messages, len(r.prompt))
        if trimmed is None:
            return "incomplete_trajectory"
        messages = trimmed
    return messages


def simple_pair(messages: list[dict]) -> tuple[str, str] | None:
    """(input, output) strings for ``ResponseDataset``, when the conversation is
    system prompts + one user text + one assistant text; system text is put
    before the user's, separated by a blank line."""
    *head, last = messages
    if (
        last["role"] != "assistant"
        or last.get("tool_calls")
        or not isinstance(last["content"], str)
    ):
        return None
    if not head or head[-1]["role"] != "user" or any(m["role"] != "system" for m in head[:-1]):
        return None
    if any(not isinstance(m["content"], str) for m in head):
        return None
    return "\n\n".join(m["content"] for m in head if m["content"]), last["content"]


class BestOfN(GroupedRecipe):
    """Best-of-n: of a task's rollouts that pass the filters, keep the highest
    reward (ties: the earliest in input order). A rollout's key is its filter
    reason, or null when it would make a record."""

    def __init__(self, sft: SFTSettings, chat: ChatSettings):
        self.sft, self.chat = sft, chat

    def summarize(self, m: Member):
        return sft_record(m.rollout, m.source, self.sft, self.chat)[1]

    def decide(self, keys: list[Key]) -> GroupResult:
        result = GroupResult()
        kept = []
        for k in keys:
            if k.summary is None:
                kept.append(k)
            else:
                result.drop(k, k.summary)
        if kept:
            best = max(kept, key=lambda k: (k.reward, -k.index))
            result.use(best)
            result.plans.append((best.index, [best.index], {}))
            for k in kept:
                result.drop(k, "not_best_of_n")
        return result

    def build(self, members: list[Member], params: dict) -> dict:
        (m,) = members
        record, reason = sft_record(m.rollout, m.source, self.sft, self.chat)
        if record is None:
            raise RuntimeError(f"rollout changed between reads: {m.source}: {reason}")
        return record


def sft_best_of_n(members: list[Member], sft: SFTSettings, chat: ChatSettings) -> GroupResult:
    return BestOfN(sft, chat)(members)
