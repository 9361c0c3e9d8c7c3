"""Pieces every recipe shares: provenance and conversation checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from gymray.rollouts import Rollout


def meta_of(r: Rollout, sources: list[tuple[str, int]]) -> dict:
    """Provenance of a record: where each rollout it came from is, and what it scored."""
    meta = {
        "task": r.task_key,
        "source": [{"file": f, "line": n} for f, n in sources],
        "reward": r.reward,
    }
    if r.agent is not None:
        meta["agent"] = r.agent
    if r.task_index is not None:
        meta["task_index"] = r.task_index
    if r.rollout_index is not None:
        meta["rollout_index"] = r.rollout_index
    if r.truncated:
        meta["truncated"] = r.truncated
    return meta


def conversation_problem(messages: list[dict]) -> str | None:
    """A filter reason when a conversation cannot be a training example."""
    called: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            called.update(c["id"] for c in m.get("tool_calls") or ())
        elif m["role"] == "tool" and m["tool_call_id"] not in called:
            return "tool_result_without_call"
    return None


@dataclass
class Member:
    """A rollout of a task group, with where it came from."""

    rollout: Rollout
    file: str
    line: int
    index: int  # position in the group

    @property
    def source(self) -> tuple[str, int]:
        return (self.file, self.line)


@dataclass
class GroupResult:
    """What a grouped recipe decided for one task: a status per member
    (``used`` or ``filtered`` with a reason) and the records it made, each
    anchored on a member (for ordering and provenance)."""

    status: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    records: list[tuple[dict, int]] = field(default_factory=list)  # (record, anchor member index)

    def use(self, m: Member) -> None:
        self.status[m.index] = ("used", None)

    def drop(self, m: Member, reason: str) -> None:
        self.status.setdefault(m.index, ("filtered", reason))
