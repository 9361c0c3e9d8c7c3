"""GRPO: one prompt record per task, from the task's rollouts.

Pure functions over task groups (no Ray). The pass rate of a task is the mean
reward of its rollouts (for 0/1 rewards, the share solved): GRPO learns nothing
from tasks every rollout solves or every rollout fails, so ``grpo.pass_rate``
keeps tasks whose pass rate lies in a range.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Literal

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
from gymray.recipes.tasks import TaskTable, sidecar_task_files
from gymray.rollouts import GROUND_TRUTH_FIELDS, Rollout, file_environment

# What the rollout produced, never part of the task row Gym is given again.
PRODUCED = frozenset({"response", "reward"})
AGENT_TYPE = "responses_api_agents"
# Ground-truth fields a math verifier can take, when their value is a math answer.
MATH_FIELDS = ("expected_answer", "answer", "ground_truth", "target", "label")
_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][-+]?\d+)?%?")
_MATH_MARKS = re.compile(r"[\\^$=]|\d|[+*/<>]|\b(sqrt|frac|pi|log|sin|cos)\b")


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
    agent_name: str | dict[str, str] | None = Field(
        None,
        description="nemo_gym: the Gym agent instance of rollouts without agent_ref: one "
        "name, or {environment or path glob: name}",
    )
    find_tasks: bool = Field(
        True,
        description="without tasks=: join each rollouts file to the task file NeMo Gym "
        "leaves beside it (X_materialized_inputs.jsonl, or X.jsonl for X_rollouts.jsonl), "
        "row by row where the prompts match",
    )
    force_math: bool = Field(
        False,
        description="math: send ground truths that do not look like math answers "
        "(text, SQL, translations) to the math verifier anyway",
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


def ground_truth(m: Member, tasks: TaskTable | None) -> tuple[str, object, str] | None:
    """(field, value, where it came from): the rollout line first, then the task file."""
    for source, fields in (("rollout", m.rollout.extras), ("tasks_file", _task_row(m, tasks))):
        for name in GROUND_TRUTH_FIELDS:
            value = (fields or {}).get(name)
            if value not in (None, ""):
                return name, value, source
    return None


def _task_row(m: Member, tasks: TaskTable | None) -> dict | None:
    """The rollout's row of its task file, when it is that rollout's task: a row whose
    prompt is not the rollout's is another task's (a file of another run), never joined."""
    if tasks is None:
        return None
    row = tasks.row(m.file, m.rollout.task_index, m.rollout.rollout_index)
    if row is None or not _same_prompt(row, m):
        return None
    return row


def _same_prompt(row: dict, m: Member) -> bool:
    request = row.get("responses_create_params")
    if not isinstance(request, dict) or "input" not in request:
        return True  # nothing to compare with
    ours = m.rollout.request.get("input")
    return _as_recorded(request["input"]) == _as_recorded(ours)


def _as_recorded(items: Any) -> bytes:
    """A prompt as NeMo Gym records it in a rollout: every message item typed
    ``"type": "message"``, where a task file may leave the type out (math_with_autograder's
    do: compared as they were, no rollout joined its task row)."""
    if isinstance(items, list):
        items = [{"type": "message", **i} if isinstance(i, dict) and "role" in i else i
                 for i in items]  # fmt: skip
    return orjson.dumps(items, option=orjson.OPT_SORT_KEYS)


def is_math_answer(field: str, value: object) -> bool:
    """Whether a ground truth is something a math verifier (``\\boxed{}``) can check:
    a number, an expression or a multiple-choice letter; not text, code or SQL."""
    if field not in MATH_FIELDS or not _scalar(value):
        return False
    text = str(value).strip()
    if not text or "\n" in text or len(text) > 60:
        return False
    if _NUMBER.fullmatch(text) or re.fullmatch(r"[A-J]", text):
        return True
    return bool(_MATH_MARKS.search(text)) and len(text.split()) <= 6


@register
class GRPO(Recipe):
    """One task row per task. A rollout's key says where its ground truth comes
    from, whether it is a math answer, whether the prompt is system text and one
    user text (``grpo.format=math`` needs those), and whether its Gym agent is known
    (``nemo_gym`` rows must name one)."""

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

    @classmethod
    def task_files(cls, settings, rollout_files: list[str]) -> dict[str, list[str]]:
        """The task files beside the rollouts that a run joins when none are given."""
        if settings.tasks or not settings.grpo.find_tasks:
            return {}
        return sidecar_task_files(rollout_files)

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.grpo = self.section
        self.fmt = self.format
        self.tasks = (
            TaskTable(context.tasks, context.files, context.task_owners) if context.tasks else None
        )

    def choose_format(self) -> str:
        if self.section.format != "auto":
            return self.section.format
        return "nemo_gym" if _carries_agent_ref(self.context.sample()) else "math"

    value_name = "pass_rate"

    def value(self, record: dict) -> float | None:
        return record["meta"]["pass_rate"]

    def notes(self, record: dict) -> list[str]:
        meta = record.get("meta", {})
        out = []
        if meta.get("ground_truth_source"):
            out.append(f"ground_truth:{meta['ground_truth_source']}")
        if self.fmt == "math" and meta.get("ground_truth_field"):
            out.append(f"math_verifier:{meta['ground_truth_field']}")
        if self.fmt == "nemo_gym":
            agent = record["agent_ref"]["name"]
            out.append(f"agent:{agent}")
            # which fields every row of an agent has: checked against Gym's request
            # models before a launch
            out += [f"row_key:{agent}:{k}" for k in record if k != "meta"]
        out.append(f"task_row:{meta.get('task_row', 'none')}")
        return out

    def agent_ref(self, m: Member) -> dict | None:
        """The Gym agent that serves a rollout's task, with the type NeMo Gym's data
        preparation sets: the rollout's own ``agent_ref``, else its task row's, else
        ``grpo.agent_name``."""
        for ref in (m.rollout.agent_ref, (_task_row(m, self.tasks) or {}).get("agent_ref")):
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
                return {**ref, "type": ref.get("type") or AGENT_TYPE}
        name = self._configured_agent(m.file)
        return {"type": AGENT_TYPE, "name": name} if name else None

    def _configured_agent(self, file: str) -> str | None:
        setting = self.grpo.agent_name
        if setting is None or isinstance(setting, str):
            return setting
        env = file_environment(file)
        if env in setting:
            return setting[env]
        return next((v for k, v in setting.items() if fnmatch.fnmatch(file, k)), None)

    def summarize(self, m: Member):
        gt = ground_truth(m, self.tasks)
        prompt = m.rollout.prompt
        # [ground truth source, its value is a scalar, prompt fits the math path,
        #  Gym agent known, ground truth is a math answer]
        return [
            None if gt is None else gt[2],
            gt is not None and _scalar(gt[1]),
            _system_and_user_text(prompt) is not None,
            self.agent_ref(m) is not None,
            gt is not None and (self.grpo.force_math or is_math_answer(gt[0], gt[1])),
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
                else "ground_truth_not_math" if not with_gt.summary[4]
                else None
            )  # fmt: skip
        else:
            reason = None if first.summary[3] else "no_agent_ref"
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
            record = {
                "input": _system_and_user_text(first.rollout.prompt),
                "ground_truth": str(gt[1]),
            }
        else:
            record = self._gym_row(first)
        r = first.rollout
        record["meta"] = {
            "task": r.task_key,
            "source": [{"file": f, "line": n} for f, n in params["sources"]],
            "pass_rate": params["pass_rate"],
            "rollouts": params["rollouts"],
            "ground_truth_source": params["ground_truth_source"],
        }
        if gt is not None:
            record["meta"]["ground_truth_field"] = gt[0]
        record["meta"]["task_row"] = "joined" if _task_row(first, self.tasks) else "none"
        if r.agent is not None:
            record["meta"]["agent"] = r.agent
        if r.task_index is not None:
            record["meta"]["task_index"] = r.task_index
        return record

    def _gym_row(self, m: Member) -> dict:
        """The task as NeMo Gym gave it: its task file row when there is one, else
        every top-level field of the rollout but what the rollout produced, with
        the request's prompt part (NeMo RL sets the sampling parameters)."""
        r = m.rollout
        row = _task_row(m, self.tasks)
        if row is not None:
            record = {k: v for k, v in row.items() if not k.startswith("_ng_")}
            record["agent_ref"] = self.agent_ref(m)
            return record
        return {
            "responses_create_params": _prompt_part(r),
            "agent_ref": self.agent_ref(m),
            **{k: v for k, v in r.extras.items() if k not in PRODUCED and not k.startswith("_ng_")},
        }

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


def _system_and_user_text(prompt: list[dict]) -> str | None:
    """The prompt as the one input text NeMo RL's math path takes: system texts,
    then the single user text, a blank line apart; None for any other shape."""
    *head, last = prompt or [{"role": None}]
    if last["role"] != "user" or any(m["role"] != "system" for m in head):
        return None
    if any(not isinstance(m["content"], str) for m in prompt):
        return None
    return "\n\n".join(m["content"] for m in prompt if m["content"])


def _prompt_part(r: Rollout) -> dict:
    return {k: v for k, v in r.request.items() if v is not None and k not in SAMPLING_KEYS}


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
