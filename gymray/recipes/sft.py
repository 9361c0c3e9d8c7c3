"""SFT: one rollout -> one transcript record, or a filter reason.

Pure functions over canonical rollouts (no Ray).
"""

from __future__ import annotations

from gymray.chat import trim_to_complete, unanswered_tool_calls
from gymray.config import ChatSettings, SFTSettings
from gymray.recipes.common import GroupResult, Member, conversation_problem, meta_of
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


def sft_best_of_n(members: list[Member], sft: SFTSettings, chat: ChatSettings) -> GroupResult:
    """Best-of-n: of a task's rollouts that pass the filters, keep the highest
    reward (ties: the earliest in input order)."""
    result = GroupResult()
    kept = []
    for m in members:
        record, reason = sft_record(m.rollout, m.source, sft, chat)
        if record is None:
            result.drop(m, reason)
        else:
            kept.append((m, record))
    if kept:
        best, record = max(kept, key=lambda mr: (mr[0].rollout.reward, -mr[0].index))
        result.use(best)
        result.records.append((record, best.index))
        for m, _ in kept:
            result.drop(m, "not_best_of_n")
    return result
