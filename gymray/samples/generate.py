"""Write gymray's bundled sample rollouts (``rollouts.jsonl`` beside this file).

    python -m gymray.samples.generate            # rewrites the sample

Small, Responses-API shaped, deterministic: a weather agent with tool calls
(parallel ones too), math with reasoning, a multi-turn game with user-simulator
turns inside the output, a truncated response, an image prompt, repeats per task
with different rewards, and a few bad lines, so every path of prepare runs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
AGENT = {"type": "responses_api_agents", "name": "sample_agent"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
CITIES = ["Paris", "Lagos", "Lima", "Osaka", "Oslo", "Quito"]


def _msg(text, mid):
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call(name, args, cid):
    return {
        "type": "function_call",
        "name": name,
        "arguments": json.dumps(args),
        "call_id": cid,
        "id": f"fc_{cid}",
        "status": "completed",
    }


def _out(cid, output):
    return {"type": "function_call_output", "call_id": cid, "output": output}


def _reasoning(text):
    return {
        "type": "reasoning",
        "id": "rs_x",
        "summary": [{"type": "summary_text", "text": text}],
        "content": None,
    }


def weather(task, k, rng):
    a, b = CITIES[task % 6], CITIES[(task + 1) % 6]
    good = k % 2 == 0
    out = [
        _reasoning(f"I need the weather in {a} and {b}."),
        _call("get_weather", {"city": a}, f"call_{task}_{k}_a"),
        _call("get_weather", {"city": b}, f"call_{task}_{k}_b"),
        _out(f"call_{task}_{k}_a", json.dumps({"city": a, "temp_c": 20 + task})),
        _out(f"call_{task}_{k}_b", json.dumps({"city": b, "temp_c": 10 + task})),
    ]
    if good:
        out.append(_msg(f"{a} is warmer ({20 + task} C vs {10 + task} C).", f"msg_{task}_{k}"))
    elif k == 1:
        out.append(_msg(f"I think {b} is warmer.", f"msg_{task}_{k}"))
    else:
        out = out[:3]  # cut after the calls: no results, no answer
    return (
        {
            "input": [
                {"type": "message", "role": "developer", "content": "Use tools for facts."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": f"Which is warmer now, {a} or {b}?"}
                    ],
                },
            ],
            "tools": [WEATHER_TOOL],
        },
        out,
        (1.0 if good else 0.0),
    )


def math(task, k, rng):
    x, y = 7 + task, 3 + k
    right = k != 3
    answer = x * 3 if right else x * 3 + 1
    out = [
        _reasoning(f"{x} times 3 is {x * 3}."),
        _msg(f"The answer is \\boxed{{{answer}}}.", f"msg_m{task}_{k}"),
    ]
    return (
        {
            "input": f"What is {x} times 3?",
            "instructions": "You are a careful math tutor.",
            "tools": [],
        },
        out,
        (1.0 if right else 0.0),
        {"expected_answer": str(x * 3), "unused": y},
    )


def game(task, k, rng):
    out = [
        _msg("<action>hit</action>", f"msg_g{task}_{k}_1"),
        {
            "type": "message",
            "role": "user",
            "content": f"Your hand: [{task + 2}, 5, 3] = {task + 10}. Hit or stand?",
        },
        _msg("<think>Close to 21.</think><action>stand</action>", f"msg_g{task}_{k}_2"),
    ]
    return (
        {
            "input": [
                {"type": "message", "role": "system", "content": "You play Blackjack."},
                {"type": "message", "role": "user", "content": "Deal me in."},
            ],
            "tools": [],
        },
        out,
        round(rng.uniform(-1, 1), 3),
    )


def image(task, k, rng):
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    return (
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What colour is this pixel?"},
                        {"type": "input_image", "image_url": pixel, "detail": "low"},
                    ],
                }
            ],
            "tools": [],
        },
        [_msg("It is red.", f"msg_i{task}_{k}")],
        (1.0 if k < 2 else 0.5),
    )


# --------------------------------------------------------------------------- builders
# Public: tests compose Gym-shaped rollouts from these (the shapes are NeMo Gym's,
# as ``../shared/spec/nemo_gym_rollouts.md`` measures them).
message = _msg
function_call = _call
function_call_output = _out
reasoning = _reasoning


def user(text, role="user"):
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


def tool(name, description="", properties=None):
    """A flat Responses API function tool."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties or {}},
        "strict": False,
    }


def rollout(input, output, reward, *, tools=(), instructions=None, agent=None, task=None,
            rollout_index=None, incomplete=None, request=None, **fields):  # fmt: skip
    """One rollout line as ``ng_collect_rollouts`` writes it. ``agent``: the agent
    instance name (``agent_ref``, omitted when None); ``task`` / ``rollout_index``:
    ``_ng_task_index`` / ``_ng_rollout_index``; ``fields``: the task's and the
    verifier's top-level fields (ground truth, judge output, ...); ``request``: a whole
    ``responses_create_params`` (e.g. :func:`full_request`) instead of ``input``/``tools``."""
    if request is None:
        request = {"input": input, "tools": list(tools), "temperature": 1.0,
                   "max_output_tokens": 512}  # fmt: skip
        if instructions is not None:
            request["instructions"] = instructions
    response = {"id": "resp", "object": "response", "output": output, "status": "completed",
                "incomplete_details": None}  # fmt: skip
    if incomplete:
        response["status"] = None
        response["incomplete_details"] = {"reason": incomplete}
    row = {"responses_create_params": request, "response": response, "reward": reward}
    if task is not None:
        row["_ng_task_index"] = task
    if rollout_index is not None:
        row["_ng_rollout_index"] = rollout_index
    if agent is not None:
        row["agent_ref"] = {"type": "responses_api_agents", "name": agent}
    row.update(fields)
    return row


def write_jsonl(path, rows) -> Path:
    """Rows as a rollouts file (one JSON object a line, as orjson writes them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def build() -> bytes:
    rng = random.Random(0)
    rows = []
    kinds = [weather, weather, math, math, math, game, game, image]
    for task, kind in enumerate(kinds):
        for k in range(4):
            res = kind(task, k, rng)
            request, output, reward = res[:3]
            extra = res[3] if len(res) > 3 else {}
            response = {
                "id": f"resp_{task}_{k}",
                "object": "response",
                "output": output,
                "status": "completed",
                "incomplete_details": None,
            }
            if kind is math and k == 2:
                response["status"] = None
                response["incomplete_details"] = {"reason": "max_output_tokens"}
            rows.append(
                {
                    "responses_create_params": {**request, "temperature": 1.0, "metadata": None},
                    "response": response,
                    "reward": reward,
                    "_ng_task_index": task,
                    "_ng_rollout_index": k,
                    "agent_ref": AGENT,
                    **extra,
                }
            )
    rng.shuffle(rows)  # completion order, not task order
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    # An untyped-message rollout without task indices (grouped by prompt hash),
    # with a line separator inside a string: split on \n only.
    lines.insert(
        5,
        json.dumps(
            {
                "responses_create_params": {
                    "input": [{"role": "user", "content": "Say hi\u2028politely."}]
                },
                "response": {"output": [_msg("Hello there!", "msg_hi")]},
                "reward": 1,
            },
            ensure_ascii=False,
        ),
    )
    bad = [
        '{"responses_create_params": {"input": "truncated',  # malformed JSON
        "<PLACEHOLDER ROW>",
        json.dumps(
            {
                "responses_create_params": {"input": "no reward"},
                "response": {"output": [_msg("x", "m")]},
            }
        ),
        json.dumps(
            {
                "responses_create_params": {"input": "bad reward"},
                "response": {"output": [_msg("x", "m")]},
                "reward": "high",
            }
        ),
        '{"responses_create_params": {"input": "nan"}, "response": {"output": []}, "reward": NaN}',
        json.dumps(
            {
                "responses_create_params": {"input": "empty"},
                "response": {"output": []},
                "reward": 1.0,
            }
        ),
        "[1, 2, 3]",
    ]
    for i, b in enumerate(bad):
        lines.insert(3 + i * 5, b)
    return ("\n".join(lines) + "\n").encode("utf-8")


def main() -> None:
    (HERE / "rollouts.jsonl").write_bytes(build())


if __name__ == "__main__":
    main()
