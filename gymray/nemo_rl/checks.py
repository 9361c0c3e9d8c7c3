"""Before a launch: will NeMo RL train on what the records hold?

Loading is not training. These checks look at the merged config the way NeMo
RL will use it and at what the dataset holds (its manifest):

- the chat template (``policy.tokenizer.chat_template``, read as NeMo RL's
  ``get_tokenizer`` reads it: absent or ``default`` is the model's own, null is a
  passthrough of message contents, ``*.jinja`` a file, anything else the
  template itself) must render the records' tool calls and tool results;
- records longer than ``data.max_input_seq_length`` are trained on nothing (NeMo
  RL masks them out): say how many, and what to raise;
- a dataset with no training records is never launched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from omegaconf import DictConfig, OmegaConf

from gymray import formats
from gymray.errors import ConfigError, EmptyDatasetError
from gymray.nemo_rl import gym_models
from gymray.recipes.base import manifest_notes

TEMPLATE_KEY = "policy.tokenizer.chat_template"
LENGTH_KEY = "data.max_input_seq_length"
# What NeMo RL's processors mask per format: `>=` (SFT, math GRPO) or `>` (preference).
MASKED_WHEN = {"openai": "ge", "simple": "ge", "math": "ge", "preference": "gt", "binary": "gt"}
PROBE_TOOL, PROBE_RESULT, PROBE_ANSWER = (
    "gymray_probe_tool",
    "gymray-probe-result",
    "gymray-probe-answer",
)
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_gymray_probe",
                "type": "function",
                "function": {"name": PROBE_TOOL, "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_gymray_probe", "content": PROBE_RESULT},
    {"role": "assistant", "content": PROBE_ANSWER},
]
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": PROBE_TOOL,
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def empty(manifest: dict, allow_empty: bool) -> None:
    train = manifest["counts"]["records"]["train"]
    if train == 0 and not allow_empty:
        raise EmptyDatasetError(
            f"dataset {manifest['output']} has no training records: nothing to launch "
            "(report.md says why; set allow_empty=true to launch anyway)"
        )


def select(cfg: DictConfig | None, key: str, default: Any = "<unset>") -> Any:
    """A value of the merged config, resolved; ``default`` when absent or unresolvable."""
    if cfg is None:
        return default
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=True)
    except Exception:  # NeMo RL registers resolvers gymray does not have
        return default


def render_template(template: str, tools: bool = True) -> str:
    """Render the probe conversation as Hugging Face's ``apply_chat_template`` does."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(
        x, ensure_ascii=False, indent=indent
    )

    def raise_exception(message):
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=PROBE_MESSAGES,
        tools=PROBE_TOOLS if tools else None,
        add_generation_prompt=False,
        bos_token="",
        eos_token="",
    )


def chat_template(cfg: DictConfig | None, manifest: dict, nemo_rl_dir: str) -> list[str]:
    """Refuse a chat template that cannot render the records' tool calls; warnings."""
    notes = manifest_notes(manifest)
    with_calls = notes.get("content:tool_calls", 0)
    value = select(cfg, TEMPLATE_KEY)
    if value == "<unset>" or (isinstance(value, str) and value.lower() == "default"):
        return []  # the model's own template: tool-calling models render tool calls
    if not with_calls:
        return []
    where = f"nemo_rl.{TEMPLATE_KEY}"
    if value is None:
        raise ConfigError(
            f"{where}=null is NeMo RL's passthrough template (message contents only): the "
            f"tool calls of {with_calls} records would vanish from training. Set {where}=default "
            "(the model's own template) or a template that renders tool_calls"
        )
    text = str(value)
    if text.endswith(".jinja"):
        path = text if os.path.isabs(text) else os.path.join(nemo_rl_dir, text)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return [f"{where}={value} is not readable here: not checked that it renders tool calls"]
    try:
        out = render_template(text)
    except Exception as e:
        raise ConfigError(
            f"{where} fails on a conversation with tool calls ({type(e).__name__}: "
            f"{str(e)[:120]}); {with_calls} records have tool calls. Set {where}=default "
            "(the model's own template) or a template that renders them"
        ) from None
    lost = [what for what, s in (("tool calls", PROBE_TOOL), ("tool results", PROBE_RESULT),
                                 ("assistant text", PROBE_ANSWER)) if s not in out]  # fmt: skip
    if lost:
        raise ConfigError(
            f"{where} does not render {' or '.join(lost)}: {with_calls} records have tool "
            f"calls that would vanish from training. Set {where}=default (the model's own "
            "template) or a template that renders tool_calls and role: tool messages"
        )
    return []


def gym_rows(manifest: dict, root: Path, config_paths: list[str] | None) -> list[str]:
    """Refuse rows that lack fields their Gym agent's request models require (Gym would
    answer them 422 mid-training); warnings for agents whose models cannot be read."""
    notes = manifest_notes(manifest)
    rows = {k.split(":", 1)[1]: n for k, n in notes.items() if k.startswith("agent:")}
    if not rows:
        return []
    if not any(k.startswith("row_key:") for k in notes):
        return ["the dataset's manifest does not say which fields its rows have (prepared by "
                "an older gymray?): rows not checked against Gym's request models"]  # fmt: skip
    required = gym_models.required_fields(root, rows, config_paths)
    problems, warnings = [], []
    for agent, need in sorted(required.items()):
        if need["unchecked"]:
            warnings.append(
                f"Gym agent {agent}: its rows' fields not checked ({need['unchecked']})"
            )
            continue
        short = {f: rows[agent] - notes.get(f"row_key:{agent}:{f}", 0) for f in need["required"]}
        missing = {f: n for f, n in short.items() if n > 0}
        if missing:
            fields = ", ".join(f"{f} ({n} rows)" for f, n in sorted(missing.items()))
            problems.append(f"{agent} needs {fields} ({need['model']})")
    if problems:
        shown = "; ".join(problems[:4]) + (
            f"; and {len(problems) - 4} more agents" if len(problems) > 4 else ""
        )
        raise ConfigError(
            "rows lack fields their NeMo Gym request models require (Gym would reject them "
            f"with 422 during training): {shown}. The rollouts dropped these "
            "task fields: pass their task files with tasks=... (or keep the task file beside "
            "the rollouts file), or leave these environments out; job.check_gym_rows=false "
            "skips this check"
        )
    return warnings


def lengths(cfg: DictConfig | None, manifest: dict) -> list[str]:
    """Warn how many records NeMo RL would mask out as too long."""
    mode = MASKED_WHEN.get(manifest["format"])
    block = manifest.get("lengths")
    if mode is None or not block:
        return []
    limit = select(cfg, LENGTH_KEY)
    if limit == "<unset>":
        return [
            f"{LENGTH_KEY} could not be read from the merged config: record lengths not checked"
        ]
    if not isinstance(limit, int):
        return []  # null: no limit
    out = []
    for split in ("train", "val"):
        total = (block.get(split) or {}).get("records", 0)
        n = exceeding(block, split, limit, strict=mode == "gt")
        if n:
            out.append(
                f"about {n} of {total} {split} records ({100 * n / total:.0f}%) are longer than "
                f"{LENGTH_KEY}={limit} tokens (estimated at {formats.CHARS_PER_TOKEN} characters a "
                "token): NeMo RL trains nothing on them (loss masked). Raise "
                "nemo_rl.policy.max_total_sequence_length (data.max_input_seq_length follows "
                f"it) or nemo_rl.{LENGTH_KEY}"
            )
    return out


def exceeding(lengths_block: dict, split: str, limit_tokens: int, strict: bool) -> int:
    """How many records of ``split`` are estimated to be longer than ``limit_tokens``
    (``strict``: longer; else at least as long, as NeMo RL's SFT masks them)."""
    block = lengths_block.get(split) or {}
    n = block.get("records", 0)
    values = np.array(block.get("chars") or [], dtype=np.float64)
    if not n or not values.size:
        return 0
    tokens = values / lengths_block.get("chars_per_token", formats.CHARS_PER_TOKEN)
    over = tokens > limit_tokens if strict else tokens >= limit_tokens
    if values.size == n:
        return int(over.sum())
    return int(round(n * over.mean()))
