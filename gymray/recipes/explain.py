"""Report sections that explain a grouped recipe's outcome, with the settings
that would change it ("why did I get no DPO pairs?" is the most common question)."""

from __future__ import annotations

import numpy as np

from gymray.config import Settings
from gymray.report import histogram_lines, reward_summary


def explain(settings: Settings, out: dict) -> tuple[list[str], list[str]]:
    per_task = out.get("per_task")
    if per_task is None:
        per_task = np.zeros((0, 4))
    if settings.algo == "dpo":
        return _dpo(settings, out, per_task)
    if settings.algo == "grpo":
        return _grpo(settings, out, per_task)
    return [], []


def _dpo(settings: Settings, out: dict, per_task: np.ndarray) -> tuple[list[str], list[str]]:
    dpo = settings.dpo
    c = out["counts"]
    pairs = c["records"]["train"] + c["records"]["val"]
    tasks = len(per_task)
    several = per_task[per_task[:, 0] >= 2]  # columns: rollouts, reward sum, min, max
    multi = len(several)
    gaps = several[:, 3] - several[:, 2] if multi else np.zeros(1)
    lines = [
        "## Pairs",
        "",
        f"{pairs} pairs (strategy `{dpo.strategy}`, pairing `{dpo.pairing}`, format `{dpo.format}`) "
        f"from {tasks} tasks, {multi} of them with two or more rollouts.",
        f"Widest reward gap within a task: {gaps.max():.4g} (median {np.median(gaps):.4g}); "
        f"`dpo.min_gap` = {dpo.min_gap} (in the environment's reward units).",
    ]
    hints = []
    if pairs == 0:
        filtered = c["filtered"]
        if tasks and multi == 0:
            hints.append(
                "every task has a single rollout: collect several per task (NeMo Gym num_repeats >= 2)"
            )
        if filtered.get("prompt_differs_within_task"):
            hints.append(
                f"{filtered['prompt_differs_within_task']} rollouts share a task index with others but "
                "not their prompt (the environment draws a new initial state per rollout), and a pair "
                "needs one context: collect repeats of the same prompt, or use SFT/GRPO on these"
            )
        if filtered.get("tied_rewards"):
            hints.append(
                f"{filtered['tied_rewards']} rollouts are in tasks whose rollouts all scored the same: nothing to prefer"
            )
        if dpo.strategy == "same_prompt" and filtered.get("gap_below_min_gap"):
            hints.append(
                f"no task has a reward gap >= dpo.min_gap={dpo.min_gap}; the widest is {gaps.max():.4g}: try dpo.min_gap={gaps.max():.4g}"
            )
        if dpo.strategy == "stratified" and tasks:
            hi = per_task[:, 3].max()
            lo = per_task[:, 2].min()
            if hi < dpo.high_threshold:
                hints.append(
                    f"no reward reaches dpo.high_threshold={dpo.high_threshold}; the highest is {hi:.4g}"
                )
            if lo > dpo.low_threshold:
                hints.append(
                    f"no reward is <= dpo.low_threshold={dpo.low_threshold}; the lowest is {lo:.4g}"
                )
            if hi >= dpo.high_threshold and lo <= dpo.low_threshold:
                hints.append(
                    "high and low rewards never occur in the same task: try dpo.strategy=same_prompt"
                )
        if filtered.get("identical_completions"):
            hints.append(
                "rollouts of a task gave identical completions: sample with temperature > 0"
            )
        if filtered.get("not_single_assistant_text"):
            hints.append(
                "dpo.format=binary needs single assistant text completions: use dpo.format=preference for tool calls and multi-turn"
            )
        lines += ["", "### Why no pairs", ""] + [
            f"- {h}"
            for h in hints
            or ["no rollout was usable (see the filtered and rejected reasons above)"]
        ]
    return ["\n".join(lines)], [f"no DPO pairs: {h}" for h in hints]


def _grpo(settings: Settings, out: dict, per_task: np.ndarray) -> tuple[list[str], list[str]]:
    rates = per_task[:, 1] / per_task[:, 0]
    c = out["counts"]
    prompts = c["records"]["train"] + c["records"]["val"]
    notes = out.get("stats", {}).get("notes", {})
    lines = [
        "## Tasks",
        "",
        f"{prompts} task prompts from {len(per_task)} tasks (format `{out['format']}`).",
    ]
    if settings.grpo.pass_rate is not None:
        lo, hi = settings.grpo.pass_rate
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
    if gt or out["format"] == "math":
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
