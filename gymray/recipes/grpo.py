"""GRPO: one prompt record per task, from the task's rollouts.

Pure functions over task groups (no Ray). The pass rate of a task is the mean
reward of its rollouts (for 0/1 rewards, the share solved): GRPO learns nothing
from tasks every rollout solves or every rollout fails, so ``grpo.pass_rate``
keeps tasks whose pass rate lies in a range.
"""

from __future__ import annotations

from gymray.config import GRPOSettings
from gymray.recipes.common import GroupResult, Member
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


def grpo_prompts(
    members: list[Member], grpo: GRPOSettings, fmt: str, tasks: dict | None = None
) -> GroupResult:
    result = GroupResult()
    rewards = [m.rollout.reward for m in members]
    pass_rate = sum(rewards) / len(rewards)
    if grpo.pass_rate is not None:
        lo, hi = grpo.pass_rate
        if not lo <= pass_rate <= hi:
            for m in members:
                result.drop(m, "pass_rate_out_of_range")
            return result
    kept = []
    for m in members:
        if grpo.reward_threshold is not None and m.rollout.reward < grpo.reward_threshold:
            result.drop(m, "below_reward_threshold")
        else:
            kept.append(m)
    if not kept:
        return result
    first = kept[0]
    gt = None
    for m in kept:  # any rollout of the task may carry it
        gt = ground_truth(m, tasks)
        if gt is not None:
            break
    if fmt == "math":
        record, reason = _math_record(first, gt)
    else:
        record, reason = _gym_record(first, gt, tasks), None
    if record is None:
        for m in kept:
            result.drop(m, reason)
        return result
    record["meta"] = {
        "task": first.rollout.task_key,
        "source": [{"file": m.file, "line": m.line} for m in kept],
        "pass_rate": pass_rate,
        "rollouts": len(members),
        "ground_truth_source": gt[1] if gt else None,
    }
    if first.rollout.agent is not None:
        record["meta"]["agent"] = first.rollout.agent
    if first.rollout.task_index is not None:
        record["meta"]["task_index"] = first.rollout.task_index
    for m in kept:
        result.use(m)
    result.records.append((record, first.index))
    return result


def _math_record(m: Member, gt) -> tuple[dict | None, str | None]:
    if gt is None:
        return None, "no_ground_truth"
    users = [x for x in m.rollout.prompt if x["role"] == "user"]
    if len(users) != 1 or not isinstance(users[0]["content"], str):
        return None, "not_single_user_prompt"
    value = gt[0]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None, "ground_truth_not_scalar"
    return {"input": users[0]["content"], "ground_truth": str(value)}, None


def _gym_record(m: Member, gt, tasks: dict | None) -> dict:
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
