"""Pieces every recipe shares: provenance and conversation checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

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
class Key:
    """What a grouped recipe decides on for one rollout, in place of the rollout:
    small enough that a shuffle of keys stays cheap whatever the data size."""

    index: int  # position in the group (input order)
    reward: float
    summary: Any  # the recipe's ``summarize``: a filter reason (str) or JSON facts
    source: tuple[str, int]  # (file, line)


@dataclass
class GroupResult:
    """What a grouped recipe decided for one task: a status per member
    (``used`` or ``filtered`` with a reason), the records it asks for (``plans``:
    anchor member index, the members whose full rollouts build the record, and
    parameters) and, once built, the records, each anchored on a member (for
    ordering and provenance)."""

    status: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    plans: list[tuple[int, list[int], dict]] = field(default_factory=list)
    records: list[tuple[dict, int]] = field(default_factory=list)  # (record, anchor member index)

    def use(self, m: Member | Key) -> None:
        self.status[m.index] = ("used", None)

    def drop(self, m: Member | Key, reason: str) -> None:
        self.status.setdefault(m.index, ("filtered", reason))


class GroupedRecipe:
    """A recipe over the rollouts of one task, in three steps, so that only
    small keys need to travel to where a task's rollouts meet:

    - ``summarize(member)``: per rollout, where it is read; a filter reason (str)
      or JSON facts (lists, numbers, strings) that ``decide`` needs;
    - ``decide(keys)``: per task, statuses and the records to build (``plans``);
    - ``build(members, params)``: one record from the full rollouts a plan names,
      in the plan's order.

    Calling the recipe on full members runs the three in one place."""

    def summarize(self, m: Member) -> Any:
        raise NotImplementedError

    def decide(self, keys: list[Key]) -> GroupResult:
        raise NotImplementedError

    def build(self, members: list[Member], params: dict) -> dict:
        raise NotImplementedError

    def key(self, m: Member) -> Key:
        # Through JSON, as the shuffle carries it, so both ways decide alike.
        summary = orjson.loads(orjson.dumps(self.summarize(m)))
        return Key(m.index, m.rollout.reward, summary, m.source)

    def __call__(self, members: list[Member]) -> GroupResult:
        result = self.decide([self.key(m) for m in members])
        by_index = {m.index: m for m in members}
        result.records = [
            (self.build([by_index[i] for i in need], params), anchor)
            for anchor, need, params in result.plans
        ]
        return result
