"""GRPO: one prompt record per task, from the task's rollouts.

Pure functions over task groups (no Ray). The pass rate of a task is the mean
reward of its rollouts (for 0/1 rewards, the share solved): GRPO learns nothing
from tasks every rollout solves or every rollout fails, so ``grpo.pass_rate``
keeps tasks whose pass rate lies in a range.
"""

from __future__ import annotations

from gymray.config import GRPOSettings
from gymray.recipes.common import GroupedRecipe, GroupResult, Key, Member
from gymray.rollouts import GROUND_TRUTH_FIELDS

# Sampling settings in a recorded request are the collection run's; NeMo RL
# replaces them with its own, so the task row carries only the prompt part.
SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "max_output_tokens",
        "top_logprobs",
        "stream",
        "store",
        "model",
        "previous_response_id",
        "background",
        "service_tier",
        "user",
        "truncation",
        "include",
        "max_tool_calls",
    }
)


def ground_truth(m: Member, tasks: dict[int, dict] | None) -> tuple[object, str] | None:
    """(ground truth, where it came from): the rollout line first, then the tasks file."""
    for source, fields in (("rollout", m.rollout.extras), ("tasks_file", _task_row(m, tasks))):
        for name in GROUND_TRUTH_FIELDS:
            value = (fields or {}).get(name)
            if value not in (None, ""):
                return value, source
    return None


def _task_row(m: Member, tasks: dict | None) -> dict | None:
    if not tasks or m.rollout.task_index is None:
        return None
    return tasks.get((m.rollout.task_index, m.rollout.rollout_index)) or tasks.get(
        (m.rollout.task_index, None)
    )


class GRPORecipe(GroupedRecipe):
    """One task row per task. A rollout's key says where its ground truth comes
    from (if it has one), whether that is a scalar, and whether its prompt is a
    single user text (``grpo.format=math`` needs both)."""

    def __init__(self, grpo: GRPOSettings, fmt: str, tasks: dict | None = None):
        self.grpo, self.fmt, self.tasks = grpo, fmt, tasks

    def summarize(self, m: Member):
        gt = ground_truth(m, self.tasks)
        users = [x for x in m.rollout.prompt if x["role"] == "user"]
        return [
            None if gt is None else gt[1],
            gt is not None and _scalar(gt[0]),
            len(users) == 1 and isinstance(users[0]["content"], str),
        ]

    def decide(self, keys: list[Key]) -> GroupResult:
        result = GroupResult()
        pass_rate = sum(k.reward for k in keys) / len(keys)
        if self.grpo.pass_rate is not None:
            lo, hi = self.grpo.pass_rate
            if not lo <= pass_rate <= hi:
                for k in keys:
                    result.drop(k, "pass_rate_out_of_range")
                return result
        kept = []
        for k in keys:
            if self.grpo.reward_threshold is not None and k.reward < self.grpo.reward_threshold:
                result.drop(k, "below_reward_threshold")
            else:
                kept.append(k)
        if not kept:
            return result
        first = kept[0]
        # any rollout of the task may carry the ground truth
        with_gt = next((k for k in kept if k.summary[0] is not None), None)
        if self.fmt == "math":
            reason = (
                "no_ground_truth" if with_gt is None
                else "not_single_user_prompt" if not first.summary[2]
                else "ground_truth_not_scalar" if not with_gt.summary[1]
                else None
            )  # fmt: skip
            if reason is not None:
                for k in kept:
                    result.drop(k, reason)
                return result
        for k in kept:
            result.use(k)
        need = [first.index]
        if with_gt is not None and with_gt is not first:
            need.append(with_gt.index)
        params = {
            "pass_rate": pass_rate,
            "rollouts": len(keys),
            "sources": [list(k.source) for k in kept],
            "ground_truth_source": None if with_gt is None else with_gt.summary[0],
        }
        result.plans.append((first.index, need, params))
        return result

    def build(self, members: list[Member], params: dict) -> dict:
        first = members[0]
        gt = ground_truth(members[-1], self.tasks) if params["ground_truth_source"] else None
        if self.fmt == "math":
            record = {"input": _single_user(first)["content"], "ground_truth": str(gt[0])}
        else:
            record = _gym_record(first, self.tasks)
        r = first.rollout
        record["meta"] = {
            "task": r.task_key,
            "source": [{"file": f, "line": n} for f, n in params["sources"]],
            "pass_rate": params["pass_rate"],
            "rollouts": params["rollouts"],
            "ground_truth_source": params["ground_truth_source"],
        }
        if r.agent is not None:
            record["meta"]["agent"] = r.agent
        if r.task_index is not None:
            record["meta"]["task_index"] = r.task_index
        return record


def grpo_prompts(
    members: list[Member], grpo: GRPOSettings, fmt: str, tasks: dict | None = None
) -> GroupResult:
    return GRPORecipe(grpo, fmt, tasks)(members)


def _scalar(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _single_user(m: Member) -> dict:
    (user,) = [x for x in m.rollout.prompt if x["role"] == "user"]
    return user


def _gym_record(m: Member, tasks: dict | None) -> dict:
    r = m.rollout
    row = _task_row(m, tasks)
    if row is not None:
        # The task file's own row is what NeMo Gym verifies against: use it whole.
        record = {k: v for k, v in row.items() if not k.startswith("_ng_")}
        record.setdefault("agent_ref", r.agent_ref)
        return record
    request = {k: v for k, v in r.request.items() if v is not None and k not in SAMPLING_KEYS}
    record = {"responses_create_params": request, "agent_ref": r.agent_ref}
    for name in GROUND_TRUTH_FIELDS:
        if name in r.extras:
            record[name] = r.extras[name]
    return record
