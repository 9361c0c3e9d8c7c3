"""One NeMo Gym rollout line -> a canonical rollout, or a reject with a reason.

Pure Python, no Ray. See ``../shared/spec/nemo_gym_rollouts.md`` for the shapes
handled here. A line is never dropped without a reason: :func:`parse_line`
returns either a :class:`Rollout` or a :class:`Reject` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from gymray.chat import (
    ConversionError,
    Reasoning,
    completion_messages,
    convert_tools,
    pair_tool_calls,
    prompt_messages,
)

RAW_LIMIT = 64 * 1024
# How deep a line may nest arrays and objects. orjson writes at most ORJSON_DEPTH
# levels; records put a rollout's values a few levels deeper than its line does.
ORJSON_DEPTH = 254
MAX_DEPTH = 200
OPEN_BRACE = ord("{")  # and '[' | 32
# Keys of a rollout line that describe the rollout itself; every other
# top-level key is the task's or the verifier's (ground truth, judge output...).
ROLLOUT_KEYS = frozenset(
    {
        "responses_create_params",
        "response",
        "reward",
        "agent_ref",
        "_ng_task_index",
        "_ng_rollout_index",
    }
)
GROUND_TRUTH_FIELDS = (
    "expected_answer",
    "ground_truth",
    "answer",
    "expected_output",
    "expected_action",
    "reference_solution",
    "gold_sql",
    "target",
    "label",
    "translation",
    "rubric",
    "verifier_metadata",
)

# Files written beside a rollouts file that are not rollouts.
SIDECAR_SUFFIXES = (
    "_materialized_inputs.jsonl",
    "_failures.jsonl",
    "_aggregate_metrics.json",
    "_reward_profiling.jsonl",
)


@dataclass
class Reject:
    reason: str
    field: str | None
    detail: str


@dataclass
class Rollout:
    reward: float
    task_key: str
    agent: str | None
    task_index: int | None
    rollout_index: int | None
    prompt: list[dict]
    completion: list[dict]
    tools: list[dict]
    has_image: bool
    truncated: str | None  # incomplete_details.reason, e.g. "max_output_tokens"
    request: dict = field(repr=False)  # the responses_create_params of the line
    extras: dict = field(repr=False)  # top-level keys that are not rollout keys
    agent_ref: dict | None = field(default=None, repr=False)


def is_sidecar(name: str) -> bool:
    base = name[:-3] if name.endswith(".gz") else name
    return base.endswith(SIDECAR_SUFFIXES)


def file_environment(uri: str) -> str:
    """The environment a rollouts file belongs to, for files whose rollouts name no
    agent: NeMo Gym keeps them in ``<environment>/data/<name>.jsonl``; elsewhere the
    file's own name says it (``math_run3_rollouts.jsonl`` -> ``math_run3``)."""
    parts = uri.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-2] == "data":
        return parts[-3]
    stem = parts[-1].split(".", 1)[0]
    for suffix in ("_rollouts", "-rollouts"):
        stem = stem.removesuffix(suffix)
    return stem or parts[-1]


def cut_raw(raw: bytes) -> tuple[str, int]:
    """The raw line for a rejects file: at most 64 KiB, with its original length."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw[:RAW_LIMIT].decode("utf-8", errors="replace"), len(raw)


def load_json(raw: bytes, openers: int | None = None) -> tuple[Any, Reject | None]:
    """Parse with orjson; on failure ask the stdlib parser, which accepts NaN,
    Infinity and lone surrogates, so the reject can say what was really wrong.

    A line nested deeper than :data:`MAX_DEPTH` is a reject: orjson writes at most
    254 levels and records hold a rollout's values a few levels deeper than the
    line does, so such a line would otherwise fail later, taking its block down.
    ``openers`` is the line's count of ``[`` and ``{`` where the caller has it
    (:func:`gymray.engine.blocks.opener_counts` counts a whole block at once).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as fast_error:
        return _load_slowly(raw, str(fast_error))
    if too_deep(raw, obj, openers):
        return None, _too_deep()
    return obj, None


def too_deep(raw: bytes, obj: Any, openers: int | None = None) -> bool:
    """Whether ``obj``, parsed from ``raw``, nests deeper than :data:`MAX_DEPTH`
    (``openers``: the count of ``[`` and ``{`` in ``raw``, if known)."""
    # Only a line with that many brackets can be that deep: counting bytes is
    # cheap, and the exact check (writing the object) is paid by long lines only.
    if openers is None and len(raw) > 8192:  # one vectorized pass ('[' | 32 == '{')
        openers = int(np.count_nonzero((np.frombuffer(raw, np.uint8) | 32) == OPEN_BRACE))
    elif openers is None:
        openers = raw.count(b"[") + raw.count(b"{")
    return openers > MAX_DEPTH and not _writable(obj)


def _load_slowly(raw: bytes, fast_error: str) -> tuple[Any, Reject | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # orjson says "surrogates not allowed ... column 1" whatever the bytes are
        bad = raw[e.start : e.start + 4].hex(" ") + (" ..." if len(raw) > e.start + 4 else "")
        return None, Reject(
            "invalid_utf8",
            None,
            f"invalid UTF-8 at byte {e.start} of the line (bytes {bad}: {e.reason}); "
            "rollout files must be UTF-8, as NeMo Gym writes them",
        )
    if fast_error.startswith("depth limit exceeded"):
        return None, _too_deep()
    try:
        obj = json.loads(text)
    except RecursionError:  # a line nested deeper than Python's stack
        return None, _too_deep()
    except ValueError:
        return None, Reject("invalid_json", None, fast_error)
    try:
        orjson.dumps(obj)
    except TypeError as e:
        if "Recursion limit" not in str(e):  # lone surrogates cannot be written as UTF-8
            return None, Reject("invalid_unicode", None, str(e))
    if not _writable(obj):
        return None, _too_deep()
    return obj, None


def _writable(obj: Any) -> bool:
    """Whether ``obj`` is at most :data:`MAX_DEPTH` levels deep: orjson then
    still writes it inside the levels records may add."""
    for _ in range(ORJSON_DEPTH - MAX_DEPTH):
        obj = [obj]
    try:
        orjson.dumps(obj)
    except TypeError:
        return False
    return True


def _too_deep() -> Reject:
    return Reject(
        "too_deeply_nested",
        None,
        f"arrays/objects nested more than {MAX_DEPTH} levels deep (gymray reads at most "
        f"{MAX_DEPTH}; records add levels and orjson writes {ORJSON_DEPTH})",
    )


def prompt_hash_key(request: dict) -> str:
    canon = {k: request.get(k) for k in ("instructions", "input", "tools")}
    digest = hashlib.blake2b(
        orjson.dumps(canon, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()
    return f"prompt:{digest}"


def task_key_of(
    obj: dict, request: dict, source_name: str
) -> tuple[str, str | None, int | None, int | None]:
    """(task key, agent name, task index, rollout index).

    ``(agent_ref.name, _ng_task_index)`` when the index is present; without an
    agent the file name stands in for it (indices restart in every collection
    run). Without an index, a hash of the canonical prompt.
    """
    agent_ref = obj.get("agent_ref")
    agent = agent_ref.get("name") if isinstance(agent_ref, dict) else None
    agent = agent if isinstance(agent, str) and agent else None
    task_index = obj.get("_ng_task_index")
    rollout_index = obj.get("_ng_rollout_index")
    task_index = (
        task_index if isinstance(task_index, int) and not isinstance(task_index, bool) else None
    )
    rollout_index = (
        rollout_index
        if isinstance(rollout_index, int) and not isinstance(rollout_index, bool)
        else None
    )
    if task_index is not None:
        owner = f"agent:{agent}" if agent else f"file:{source_name}"
        return f"{owner}#{task_index}", agent, task_index, rollout_index
    return prompt_hash_key(request), agent, task_index, rollout_index


@dataclass
class Checked:
    """A line whose top level is a rollout (response, finite reward), not yet converted."""

    obj: dict
    request: dict
    response: dict
    output: list
    reward: float


def parse_line(
    raw: bytes, source_name: str = "", reasoning: Reasoning = "drop", openers: int | None = None
) -> Rollout | Reject:
    """Parse one line (its trailing newline allowed) into a canonical rollout or a reject
    (``openers``: see :func:`load_json`)."""
    checked = check_line(raw, openers)
    return checked if isinstance(checked, Reject) else convert(checked, source_name, reasoning)


def check_line(raw: bytes, openers: int | None = None) -> Checked | Reject:
    """The cheap checks of a line: JSON, response, reward. Recipes that filter on
    the reward alone can do so before paying for the conversion."""
    if not raw.strip():
        return Reject("empty_line", None, "the line is empty")
    obj, err = load_json(raw, openers)
    if err is not None:
        return err
    if not isinstance(obj, dict):
        return Reject(
            "not_an_object", None, f"the line is a JSON {type(obj).__name__}, not an object"
        )

    response = obj.get("response")
    if response is None:
        return Reject("missing_response", "response", "no response: not a completed rollout")
    if not isinstance(response, dict):
        return Reject(
            "invalid_response",
            "response",
            f"response must be an object, got {type(response).__name__}",
        )
    if "reward" not in obj or obj["reward"] is None:
        return Reject("missing_reward", "reward", "no reward")
    reward = obj["reward"]
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        return Reject("reward_not_number", "reward", f"reward must be a number, got {reward!r:.80}")
    reward = float(reward)
    if not math.isfinite(reward):
        return Reject("reward_not_finite", "reward", f"reward is {reward}")

    request = obj.get("responses_create_params")
    if request is None:
        request = {}
    elif not isinstance(request, dict):
        return Reject("invalid_request", "responses_create_params", "must be an object")
    output = response.get("output")
    if not isinstance(output, list):
        return Reject(
            "missing_output",
            "response.output",
            f"response.output must be a list, got {type(output).__name__}",
        )
    if not output:
        return Reject(
            "empty_trajectory",
            "response.output",
            "response.output is empty: the model produced nothing",
        )
    return Checked(obj, request, response, output, reward)


def convert(c: Checked, source_name: str = "", reasoning: Reasoning = "drop") -> Rollout | Reject:
    """Convert a checked line to a canonical rollout (chat messages, tools, task key)."""
    obj, request, response, output, reward = c.obj, c.request, c.response, c.output, c.reward
    try:
        prompt, prompt_images = prompt_messages(request, reasoning)
        completion, completion_images = completion_messages(output, reasoning)
        tools = convert_tools(request.get("tools"))
    except ConversionError as e:
        return Reject("unsupported_shape", e.field, e.message)
    # Ids reused across turns are made unique here, once for every recipe; ids
    # that cannot be (tool_call_problem) are a recipe's filter reason. The prompt
    # first, on its own: its ids must not depend on the completion (rollouts of
    # one task share one context).
    pair_tool_calls(prompt)
    pair_tool_calls(prompt + completion)
    incomplete = response.get("incomplete_details")
    truncated = None
    if isinstance(incomplete, dict) and incomplete.get("reason"):
        truncated = str(incomplete["reason"])
    elif response.get("status") == "incomplete":
        truncated = "incomplete"

    task_key, agent, task_index, rollout_index = task_key_of(obj, request, source_name)
    return Rollout(
        reward=reward,
        task_key=task_key,
        agent=agent,
        task_index=task_index,
        rollout_index=rollout_index,
        prompt=prompt,
        completion=completion,
        tools=tools,
        has_image=prompt_images or completion_images,
        truncated=truncated,
        request=request,
        agent_ref=obj.get("agent_ref") if isinstance(obj.get("agent_ref"), dict) else None,
        extras={k: v for k, v in obj.items() if k not in ROLLOUT_KEYS},
    )


def hash64(text: str | bytes, seed: int = 0) -> int:
    """A stable signed 64-bit hash (Arrow int64) of ``text``."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    base = _BLAKE.get(seed)
    if base is None:  # a keyed hasher per seed, copied: 0.7 us a hash, not 1.4-2.0
        salt = seed.to_bytes(8, "little", signed=True) + bytes(8)
        base = _BLAKE[seed] = hashlib.blake2b(digest_size=8, salt=salt)
    h = base.copy()
    h.update(data)
    return int.from_bytes(h.digest(), "little", signed=True)


_BLAKE: dict[int, Any] = {}  # seed -> an empty BLAKE2b hasher salted with it


def unit_interval(text: str, seed: int = 0) -> float:
    """A stable number in [0, 1) from ``text``: the train/val split coordinate."""
    return (hash64(text, seed) & 0xFFFFFFFFFFFFFFFF) / 2.0**64
