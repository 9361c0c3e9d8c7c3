"""GRPO: one prompt record per task, from the task's rollouts.

Pure functions over task groups (no Ray). The pass rate of a task is the mean
reward of its rollouts (for 0/1 rewards, the share solved): GRPO learns nothing
from tasks every rollout solves or every rollout fails, so ``grpo.pass_rate``
keeps tasks whose pass rate lies in a range.
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import Field

from gymray.histogram import histogram_lines, reward_summary
from gymray.recipes.base import (
    Entrypoint,
    GroupResult,
    Key,
    Member,
    Outcome,
    Recipe,
    Section,
    register,
)
from gymray.rollouts import GROUND_TRUTH_FIELDS


class GRPOSettings(Section):
    format: Literal["auto", "nemo_gym", "math"] = Field(
        "auto",
        description="nemo_gym (NeMo Gym task rows for NemoGymDataset) or math ({input, "
        "ground_truth} strings for ResponseDataset); auto: nemo_gym when rollouts carry agent_ref",
    )
    reward_threshold: float | None = Field(
        0.0, description="rollouts below it do not count as sources of a task"
    )
    pass_rate: tuple[float, float] | None = Field(
        None, description="[lo, hi]: keep tasks whose mean reward lies in the range"
    )


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


@register
class GRPO(Recipe):
    """One task row per task. A rollout's key says where its ground truth comes
    from (if it has one), whether that is a scalar, and whether its prompt is a
    single user text (``grpo.format=math`` needs both)."""

    name = "grpo"
    help = "task prompts for GRPO (NeMo RL run_grpo.py, or run_grpo_nemo_gym.py for Gym tasks)"
    settings = GRPOSettings
    entrypoints = {
        "nemo_gym": Entrypoint(
            "examples/nemo_gym/run_grpo_nemo_gym.py",
            "examples/nemo_gym/grpo_workplace_assistant_nemotron_nano_v2_9b.yaml",
        ),
        "math": Entrypoint("examples/run_grpo.py", "examples/configs/grpo_math_1B.yaml"),
    }
    needs_request = True

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.grpo = self.section
        self.fmt = self.format
        self.tasks, self.bad_task_lines = load_tasks(context.tasks) if context.tasks else (None, 0)

    def choose_format(self) -> str:
        if self.section.format != "auto":
            return self.section.format
        return "nemo_gym" if _carries_agent_ref(self.context.sample()) else "math"

    def note(self, record: dict) -> str | None:
        source = record.get("meta", {}).get("ground_truth_source", "")
        return None if source == "" else f"ground_truth:{source}"

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

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        per_task = outcome.per_task
        rates = per_task[:, 1] / per_task[:, 0]
        c = outcome.counts
        prompts = c["records"]["train"] + c["records"]["val"]
        notes = outcome.notes
        lines = [
            "## Tasks",
            "",
            f"{prompts} task prompts from {len(per_task)} tasks (format `{outcome.format}`).",
        ]
        if self.grpo.pass_rate is not None:
            lo, hi = self.grpo.pass_rate
            inside = int(((rates >= lo) & (rates <= hi)).sum()) if rates.size else 0
            lines.append(
                f"`grpo.pass_rate` = [{lo}, {hi}]: {inside} tasks inside, {rates.size - inside} outside."
            )
        if rates.size:
            summary = reward_summary(rates)
            lines += [
                "",
                "Pass rate (mean reward of a task's rollouts) over tasks:",
                "",
                "```",
                *histogram_lines(summary["histogram"]),
                "```",
            ]
        gt = {k.split(":", 1)[1]: v for k, v in notes.items() if k.startswith("ground_truth:")}
        if gt or outcome.format == "math":
            lines += [
                "",
                "Ground truth found: "
                + (
                    ", ".join(f"{v} from the {k.replace('_', ' ')}" for k, v in sorted(gt.items()))
                    or "none"
                ),
            ]
        warnings = []
        if prompts == 0 and c["filtered"].get("no_ground_truth"):
            warnings.append(
                "no ground truth in the rollouts: pass the task file with tasks=... (example.jsonl or *_materialized_inputs.jsonl)"
            )
        if prompts == 0 and c["filtered"].get("pass_rate_out_of_range") and rates.size:
            warnings.append(
                f"no task's pass rate lies in grpo.pass_rate; task pass rates range {rates.min():.3g}..{rates.max():.3g}"
            )
        return ["\n".join(lines)], warnings


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


def _carries_agent_ref(lines) -> bool:
    """``grpo.format=auto``: NeMo Gym task rows when the rollouts name their agent."""
    for raw in lines:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "response" in obj:
            return isinstance(obj.get("agent_ref"), dict)
    return False


def load_tasks(files: list[tuple[str, bytes]]) -> tuple[dict, int]:
    """Task rows keyed by ``(_ng_task_index, _ng_rollout_index)``: a materialized
    inputs file has both; a plain task file's row number is the task index."""
    rows: dict = {}
    bad = 0
    for _uri, data in files:
        for n, raw in enumerate(x for x in data.split(b"\n") if x.strip()):
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            ti = row.get("_ng_task_index", n)
            rows[(ti, row.get("_ng_rollout_index"))] = row
            rows.setdefault((ti, None), row)
    return rows, bad
