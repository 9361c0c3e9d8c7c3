"""Looking at a dataset in a terminal: counts, environments, records as conversations."""

from __future__ import annotations

from typing import Any

import orjson

TEXT = 300  # characters of a message shown before it is cut (in the terminal view only)


def _cut(text: str, n: int = TEXT) -> str:
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= n else text[:n] + f"… (+{len(text) - n} chars)"


def conversation(messages: list[dict], indent: str = "  ") -> list[str]:
    """Chat messages as lines: role, text, tool calls and their results."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(
                p.get("text") or f"[{p.get('type')}]" for p in content if isinstance(p, dict)
            )
        head = f"{indent}{m.get('role', '?'):>9}: "
        if content:
            out.append(head + _cut(str(content)))
            head = indent + " " * 11
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            out.append(f"{head}→ {fn.get('name')}({_cut(str(fn.get('arguments', '')), 120)})")
            head = indent + " " * 11
        if not content and not m.get("tool_calls"):
            out.append(head + "(empty)")
    return out


def record_lines(record: dict) -> list[str]:
    """One record of any format, as a person reads it."""
    meta = record.get("meta") or {}
    where = ", ".join(
        f"{s['file'].rsplit('/', 1)[-1]}:{s['line']}" for s in meta.get("source", [])[:2]
    )
    lines = [f"- task {meta.get('task')} ({where})"]
    if "messages" in record:
        lines += conversation(record["messages"])
        if record.get("tools"):
            names = [t.get("function", t).get("name") for t in record["tools"]]
            lines.append(f"    tools: {', '.join(map(str, names))}")
    elif "completions" in record:
        lines += conversation(record["context"])
        for c in sorted(record["completions"], key=lambda c: c["rank"]):
            label = "chosen" if c["rank"] == 0 else "rejected"
            reward = meta.get(f"{label}_reward")
            lines.append(f"  {label} (reward {reward}):")
            lines += conversation(c["completion"], "    ")
    elif "chosen" in record:
        prompt = record["prompt"]
        lines += conversation(
            prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        )
        lines.append(f"  chosen ({record.get('chosen_reward')}): {_cut(record['chosen'])}")
        lines.append(f"  rejected ({record.get('rejected_reward')}): {_cut(record['rejected'])}")
    elif "responses_create_params" in record:
        request = record["responses_create_params"]
        inp = request.get("input")
        lines += conversation(inp if isinstance(inp, list) else [{"role": "user", "content": inp}])
        fields = [k for k in record if k not in ("responses_create_params", "agent_ref", "meta")]
        lines.append(
            f"  agent: {(record.get('agent_ref') or {}).get('name')}; task fields: {', '.join(fields)}"
        )
    else:
        lines += [f"  {k}: {_cut(str(v))}" for k, v in record.items() if k != "meta"]
    return lines


def environment_table(environments: dict[str, dict], limit: int = 40) -> list[str]:
    rows = sorted(environments.items(), key=lambda kv: -kv[1].get("lines", 0))
    width = max([11, *(len(e) for e, _ in rows[:limit])])
    out = [f"{'environment':<{width}}  {'lines':>6} {'used':>6} {'filt':>6} {'rej':>6} "
           f"{'train':>6} {'val':>5} {'reward':>8} {'tok p50':>8}"]  # fmt: skip
    for env, e in rows[:limit]:
        reward = e.get("reward", {}).get("mean")
        tokens = e.get("tokens_est", {}).get("p50")
        out.append(
            f"{env:<{width}}  {e.get('lines', 0):>6} {e.get('used', 0):>6} "
            f"{sum(e.get('filtered', {}).values()):>6} {sum(e.get('rejected', {}).values()):>6} "
            f"{e['records']['train']:>6} {e['records']['val']:>5} "
            f"{'' if reward is None else f'{reward:.3g}':>8} {'' if tokens is None else tokens:>8}"
        )
    if len(rows) > limit:
        out.append(f"... and {len(rows) - limit} more environments (report.html has them all)")
    return out


def render_dataset(ds: Any, examples: int = 2) -> str:
    """What ``python -m gymray.run inspect DIR`` prints."""
    m = ds.manifest
    c = m["counts"]
    lines = [
        f"{m.get('algo')} dataset ({m.get('format')}) at {ds.output}",
        f"  fingerprint {m.get('fingerprint')}, {len(m.get('inputs', []))} input file(s)",
        f"  {c['input_lines']} lines: used {c['used']}, filtered {sum(c['filtered'].values())}, "
        f"rejected {sum(c['rejected'].values())}; records train {c['records']['train']}, "
        f"val {c['records']['val']}",
    ]
    for kind in ("filtered", "rejected"):
        reasons = sorted(c[kind].items(), key=lambda kv: -kv[1])  # all: they add up
        if reasons:
            lines.append(f"  {kind}: " + ", ".join(f"{r} {n}" for r, n in reasons))
    if m.get("environments"):
        lines += ["", *environment_table(m["environments"])]
    for w in m.get("warnings", []):
        lines.append(f"warning: {w}")
    records = ds.head(examples)
    if records:
        lines += ["", f"first {len(records)} record(s):"]
        for rec in records:
            lines += record_lines(rec)
    return "\n".join(lines) + "\n"


def read_head(stream, n: int, limit: int = 4 << 20) -> list[dict]:
    """The first ``n`` JSONL records of a stream (a bounded read)."""
    data = stream.read(limit)
    lines = data.split(b"\n")
    if len(data) == limit:
        lines = lines[:-1]  # the last one may be cut
    return [orjson.loads(x) for x in lines[:n] if x.strip()]
