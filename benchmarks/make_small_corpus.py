#!/usr/bin/env python3
"""make_corpus.py with smaller lines and distinct completions, for DPO at 1M rollouts.

    make_small_corpus.py OUT_DIR [--max-line-bytes N] [--distinct-completions]
                         [--tasks N] [--repeats K] [--shards S] [--seed X] [--bad-fraction F]

Uses ``../shared/bench/make_corpus.py`` (``GYMRAY_MAKE_CORPUS``) for the
fixture templates, the prompt tags and the bad lines, and repeats its main loop
exactly (same RNG calls, so the same task order, rewards and bad lines), with
two changes:

* ``--max-line-bytes N`` (0 = off): every template's long strings (message
  text, reasoning, tool descriptions, function-call arguments, verifier
  fields) are cut in the middle, keeping head and tail, until the template is
  at most N bytes as JSON (or its strings are down to 32 characters), then
  long lists in the task/verifier fields are cut. Conversations keep all their
  turns, so templates with long ones stay above N: at N=2048 the mean line is
  ~2.5-3 KB (the real templates average ~18 KB: 1M rollouts are ~17 GB).
  Structure (turns, tool calls, ids, rewards) is kept.
* ``--distinct-completions``: the assistant's last output text gets
  `` [rollout k]``, so the K rollouts of a task differ (make_corpus copies one
  template K times, and DPO never pairs identical completions).

Prints the same JSON summary as make_corpus.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import random

MAKE_CORPUS = os.environ.get(
    "GYMRAY_MAKE_CORPUS",
    str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "bench" / "make_corpus.py"),
)
MIN_CAP = 32
CONVERSATION_KEYS = {"responses_create_params", "response", "reward", "agent_ref"}


def load_make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", MAKE_CORPUS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cut(value, cap: int):
    if isinstance(value, str):
        if len(value) <= cap:
            return value
        half = cap // 2
        return value[:half] + "…" + value[-(cap - half - 1) :]
    if isinstance(value, dict):
        return {k: _cut(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, cap) for v in value]
    return value


def _cut_lists(value, n: int):
    if isinstance(value, dict):
        return {k: _cut_lists(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_lists(v, n) for v in value[:n]]
    return value


def shrink(template: dict, max_bytes: int) -> dict:
    """Cut long strings in the middle; then, if still too big, long lists in the
    task/verifier fields (never the conversation, the tools or the response)."""
    size = len(json.dumps(template, ensure_ascii=False).encode())
    if not max_bytes or size <= max_bytes:
        return template
    out = template
    cap = 4096
    while cap >= MIN_CAP:
        out = _cut(template, cap)
        if len(json.dumps(out, ensure_ascii=False).encode()) <= max_bytes:
            return out
        cap //= 2
    out = _cut(template, MIN_CAP)
    for n in (16, 4, 1):
        out = {k: (v if k in CONVERSATION_KEYS else _cut_lists(v, n)) for k, v in out.items()}
        if len(json.dumps(out, ensure_ascii=False).encode()) <= max_bytes:
            break
    return out


def tag_completion(r: dict, k: int) -> None:
    """Append `` [rollout k]`` to the last assistant output text, if there is one."""
    output = (r.get("response") or {}).get("output") or []
    for item in reversed(output):
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        if isinstance(content, str):
            item["content"] = content + f" [rollout {k}]"
            return
        for part in reversed(content or []):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] += f" [rollout {k}]"
                return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bad-fraction", type=float, default=0.0)
    ap.add_argument("--max-line-bytes", type=int, default=0)
    ap.add_argument("--distinct-completions", action="store_true")
    a = ap.parse_args()
    mc = load_make_corpus()
    rng = random.Random(a.seed)
    tpl = [shrink(t, a.max_line_bytes) for t in mc.templates()]
    order = [(t, k) for t in range(a.tasks) for k in range(a.repeats)]
    rng.shuffle(order)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"rollouts-{i:04d}.jsonl", "wb") for i in range(a.shards)]
    nbytes = nbad = 0
    for n, (t, k) in enumerate(order):
        base = tpl[t % len(tpl)]
        r = json.loads(json.dumps(base))
        mc.uniquify(r.setdefault("responses_create_params", {}), t)
        if a.distinct_completions:
            tag_completion(r, k)
        r["_ng_task_index"], r["_ng_rollout_index"] = t, k
        r["agent_ref"] = {"type": "responses_api_agents", "name": f"agent_{t % 7}"}
        r["reward"] = rng.choice([0.0, 1.0]) if t % 2 else round(rng.random(), 6)
        line = json.dumps(r, ensure_ascii=False)
        if a.bad_fraction and rng.random() < a.bad_fraction:
            line, nbad = mc.bad_line(rng, line), nbad + 1
        nbytes += files[n % a.shards].write((line + "\n").encode("utf-8", "surrogatepass"))
    for f in files:
        f.close()
    print(
        json.dumps(
            {
                "lines": len(order),
                "bad_lines": nbad,
                "bytes": nbytes,
                "templates": len(tpl),
                "max_line_bytes": a.max_line_bytes,
                "distinct_completions": a.distinct_completions,
            }
        )
    )


if __name__ == "__main__":
    main()
