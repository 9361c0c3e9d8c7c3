#!/usr/bin/env python3
"""The floor any SFT tool must pay, in one process: read bytes, split on
``b"\\n"``, ``orjson.loads`` each line, turn ``response.output`` ``message`` /
``function_call`` / ``function_call_output`` items into chat messages,
``orjson.dumps`` a record a line into one JSONL.

    minimal_sft.py CORPUS_DIR OUT.jsonl [--reward-threshold T] [--processes N]

No validation (a bad line raises), no dedup, no train/val split, no
provenance, no Parquet, no listings. A record is ``{"messages", "tools"}``:
the prompt (``instructions`` as a system message, ``input`` as a user message
or its items converted the same way) followed by the converted output; tools
pass through as the request has them. ``--reward-threshold T`` skips lines
whose ``reward`` is below T before converting them (the floor of SFT's
default 0.95 filter: the line must still be parsed to read its reward).

``--processes N``: N processes of the loop at once, no Ray: process k takes the lines
that start in the k-th N-th of each file's bytes and writes ``OUT.jsonl.k`` (N files,
not one). What N cores can do at best with this loop: issue 12's reference for a
cluster (its 16-core figure was 16 such processes).

Depends on orjson only (not on gymray). Prints a JSON summary: ``seconds``
(after imports), ``cpu_seconds`` of that part (all N processes), ``lines``,
``records``, ``bytes``, ``peak_rss_gib`` (of one process: the largest).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import subprocess
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


def _share(path: str, part: int, parts: int) -> bytes:
    """The lines that start in the ``part``-th of ``parts`` equal byte ranges of ``path``."""
    with open(path, "rb") as f:
        if parts == 1:
            return f.read()
        size = os.fstat(f.fileno()).st_size
        if not size:
            return b""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:

            def line_start(at: int) -> int:  # the first line starting at or after ``at``
                if at <= 0 or at >= size:
                    return min(max(at, 0), size)
                nl = m.find(b"\n", at - 1)
                return size if nl < 0 else nl + 1

            return m[line_start(size * part // parts) : line_start(size * (part + 1) // parts)]


def run(
    corpus: str, out_path: str, threshold: float | None, share: int = 0, shares: int = 1
) -> dict:
    loads, dumps, newline = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    t0, c0 = time.perf_counter(), time.process_time()
    files = sorted(os.path.join(corpus, n) for n in os.listdir(corpus) if n.endswith(".jsonl"))
    lines = records = nbytes = 0
    with open(out_path, "wb") as w:
        for path in files:
            data = _share(path, share, shares)
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


def run_parallel(corpus: str, out_path: str, threshold: float | None, n: int) -> dict:
    """``n`` processes of :func:`run` at once, each on its share of every file."""
    t0 = time.perf_counter()
    extra = [] if threshold is None else ["--reward-threshold", str(threshold)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                corpus,
                f"{out_path}.{k}",
                *extra,
                "--_share",
                str(k),
                str(n),
            ],
            stdout=subprocess.PIPE,
        )
        for k in range(n)
    ]
    each = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a loop process failed: {[p.returncode for p in procs]}")
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(sum(e["cpu_seconds"] for e in each), 3),
        "processes": n,
        **{k: sum(e[k] for e in each) for k in ("lines", "records", "bytes")},
        "out": [e["out"] for e in each],
        "peak_rss_gib": max(e["peak_rss_gib"] for e in each),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--reward-threshold", type=float, default=None)
    ap.add_argument("--processes", type=int, default=1, help="N processes at once (see above)")
    ap.add_argument("--_share", nargs=2, type=int, default=(0, 1), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.processes > 1:
        print(json.dumps(run_parallel(a.corpus, a.out, a.reward_threshold, a.processes)))
    else:
        print(json.dumps(run(a.corpus, a.out, a.reward_threshold, *a._share)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
