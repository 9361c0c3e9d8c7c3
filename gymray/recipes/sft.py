"""SFT: one rollout -> one transcript record, or a filter reason.

``openai`` records (``{messages, tools}``) keep tool calls, tool results and
multi-turn conversations; ``simple`` records (``{input, output}``) hold a
single-turn text exchange. With ``sft.best_of_n`` only the best rollout of each
task is kept (a grouped recipe).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gymray.chat import ChatSettings, tool_call_problem, trim_to_complete, unanswered_tool_calls
from gymray.recipes.base import (
    Entrypoint,
    GroupResult,
    Key,
    Member,
    Outcome,
    Recipe,
    Section,
    conversation_problem,
    manifest_notes,
    meta_of,
    register,
)
from gymray.rollouts import Checked, Rollout


class SFTSettings(Section):
    format: Literal["openai", "simple"] = Field(
        "openai",
        description="openai ({messages, tools}: tool calls and multi-turn kept) or simple "
        "({input, output}: single-turn text only, no tools offered)",
    )
    reward_threshold: float | None = Field(
        0.95, description="keep rollouts with reward >= this (null: all)"
    )
    drop_truncated: bool = Field(True, description="drop responses cut by max_output_tokens")
    best_of_n: bool = Field(False, description="keep only the best rollout of each task")
    dedup: bool = Field(True, description="drop exact duplicate records (provenance aside)")
    min_examples: int = Field(
        100, description="warn when fewer training records than this are written"
    )


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
        if r.has_image:
            messages = [nemo_rl_images(m) for m in messages]
        return {"messages": messages, "tools": r.tools, "meta": meta}, None
    if r.tools:  # {input, output} cannot hold the schemas the answer was given with
        return None, "tools_offered"
    simple = simple_pair(messages)
    if simple is None:
        return None, "not_single_turn_text"
    return {"input": simple[0], "output": simple[1], "meta": meta}, None


def nemo_rl_images(message: dict) -> dict:
    """A message whose OpenAI ``image_url`` parts are written as NeMo RL's
    ``{"type": "image", "image": <URL, data URI or path>}``: the only image parts
    NeMo RL's SFT data path loads (it passes ``image_url`` parts on unloaded)."""
    content = message["content"]
    if not isinstance(content, list):
        return message
    parts = [
        {"type": "image", "image": p["image_url"]["url"]} if p.get("type") == "image_url" else p
        for p in content
    ]
    return {**message, "content": parts}


def content_notes(messages: list[dict], tools: list[dict]) -> list[str]:
    """What a record's conversation holds that a chat template must render."""
    notes = []
    if any(m.get("tool_calls") for m in messages):
        notes.append("content:tool_calls")
    if any(isinstance(m["content"], list) and any(p.get("type") == "image" for p in m["content"])
           for m in messages):  # fmt: skip
        notes.append("content:images")
    if tools:
        notes.append("content:tools")
    return notes


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
    # after the trim: a broken call in a cut-off tail costs nothing
    return tool_call_problem(messages) or messages


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


@register
class SFT(Recipe):
    """Per rollout; with ``sft.best_of_n``, of a task's rollouts that pass the
    filters, the highest reward (ties: the earliest in input order). A rollout's
    key is then its filter reason, or null when it would make a record."""

    name = "sft"
    help = "supervised fine-tuning transcripts (NeMo RL examples/run_sft.py)"
    settings = SFTSettings
    entrypoints = {
        "openai": Entrypoint("examples/run_sft.py", "examples/configs/sft.yaml"),
        "simple": Entrypoint("examples/run_sft.py", "examples/configs/sft.yaml"),
    }
    # Records with images need a vision-language model: NeMo RL's VLM SFT entrypoint
    # (the same data path with the model's processor) and its base config.
    vlm = Entrypoint("examples/run_vlm_sft.py", "examples/configs/sft_vlm_3B.yaml")

    @classmethod
    def entrypoint(cls, fmt: str, manifest: dict) -> Entrypoint:
        return cls.vlm if manifest_notes(manifest).get("content:images") else cls.entrypoints[fmt]

    value_name = "reward"

    def value(self, record: dict) -> float | None:
        return record["meta"]["reward"]

    def notes(self, record: dict) -> list[str]:
        if "messages" not in record:
            return []
        return content_notes(record["messages"], record["tools"])

    @property
    def grouped(self) -> bool:
        return self.section.best_of_n

    @property
    def dedup(self) -> bool:
        return self.section.dedup

    def prefilter(self, checked: Checked) -> str | None:
        threshold = self.section.reward_threshold
        if threshold is not None and checked.reward < threshold:
            return "below_reward_threshold"
        return None

    def record(self, r: Rollout, source: tuple[str, int]) -> tuple[dict | None, str | None]:
        return sft_record(r, source, self.section, self.chat)

    def summarize(self, m: Member):
        return sft_record(m.rollout, m.source, self.section, self.chat)[1]

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
        record, reason = sft_record(m.rollout, m.source, self.section, self.chat)
        if record is None:
            raise RuntimeError(f"rollout changed between reads: {m.source}: {reason}")
        return record

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        train = outcome.counts["records"]["train"]
        if 0 < train < self.section.min_examples:  # (none at all is an error of its own)
            return [], [
                f"only {train} training records (fewer than sft.min_examples="
                f"{self.section.min_examples}): SFT on so few examples rarely helps"
            ]
        return [], []
