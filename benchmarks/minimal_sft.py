#!/usr/bin/env python3
"""The floor any SFT tool must pay, in one process: read bytes, split on
``b"\\n"``, ``orjson.loads`` each line, turn ``response.output`` ``message`` /
``function_call`` / ``function_call_output`` items into chat messages,
``orjson.dumps`` a record a line into one JSONL.

    minimal_sft.py CORPUS_DIR OUT.jsonl [--reward-threshold T]

No validation (a bad line raises), no dedup, no train/val split, no
provenance, no Parquet, no listings. A record is ``{"messages", "tools"}``:
the prompt (``instructions`` as a system message, ``input`` as a user message
or its items converted the same way) followed by the converted output; tools
pass through as the request has them. ``--reward-threshold T`` skips lines
whose ``reward`` is below T before converting them (the floor of SFT's
default 0.95 filter: the line must still be parsed to read its reward).

Depends on orjson only (not on gymray). Prints a JSON summary: ``seconds``
(after imports), ``cpu_seconds`` of that part, ``lines``, ``records``,
``bytes``, ``peak_rss_gib``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import orjson


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or () if isinstance(p, dict))


def _messages(items: list, out: list) -> None:
    for it in items:
        kind = it.get("type")
        if kind == "function_call":
            call = {
                "id": it.get("call_id"),
                "type": "function",
                "function": {"name": it.get("name"), "arguments": it.get("arguments")},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # consecutive calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": it.get("call_id"),
                        "content": _text(it.get("output"))})  # fmt: skip
        elif kind == "message" or (kind is None and "role" in it):
            out.append({"role": it.get("role") or "user", "content": _text(it.get("content"))})
        # reasoning and other items: dropped


def run(corpus: str, out_path: str, threshold: float | None) -> dict:
    loads, dumps, newline = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    t0, c0 = time.perf_counter(), time.process_time()
    files = sorted(os.path.join(corpus, n) for n in os.listdir(corpus) if n.endswith(".jsonl"))
    lines = records = nbytes = 0
    with open(out_path, "wb") as w:
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            nbytes += len(data)
            parts = data.split(b"\n")
            del data
            out = []
            for raw in parts:
                if not raw:
                    continue
                lines += 1
                obj = loads(raw)
                if threshold is not None and obj["reward"] < threshold:
                    continue
                request = obj.get("responses_create_params") or {}
                messages: list = []
                if request.get("instructions"):
                    messages.append({"role": "system", "content": _text(request["instructions"])})
                prompt = request.get("input")
                if isinstance(prompt, str):
                    messages.append({"role": "user", "content": prompt})
                else:
                    _messages(prompt or (), messages)
                _messages(obj["response"]["output"], messages)
                out.append(dumps({"messages": messages, "tools": request.get("tools") or []},
                                 option=newline))  # fmt: skip
            del parts
            records += len(out)
            w.write(b"".join(out))
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),
        "lines": lines,
        "records": records,
        "bytes": nbytes,
        "out": out_path,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--reward-threshold", type=float, default=None)
    a = ap.parse_args()
    print(json.dumps(run(a.corpus, a.out, a.reward_threshold)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
