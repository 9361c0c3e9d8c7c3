"""The example records of ``report.html``: whole records, as written, in the shape of
their format (a DPO pair's context, then chosen and rejected side by side; an SFT
conversation with its roles, tool calls and tool results; a GRPO task row). Long
texts are folded in ``<details>``, never cut; everything is escaped (rollout text
is untrusted) and nothing is loaded from elsewhere (only inline ``data:`` images).
"""

from __future__ import annotations

import re
from html import escape

import orjson

from gymray.dataset.charts import num
from gymray.rollouts import file_environment

EXAMPLES = 5
EXAMPLE_BUDGET = 2 << 20  # bytes of JSON of the examples together (at least one is shown)
LONG_CHARS, LONG_LINES = 700, 14  # texts longer than this are folded in <details>


def choose_examples(
    records: list[dict], n: int = EXAMPLES, budget: int = EXAMPLE_BUDGET
) -> list[dict]:
    """Up to ``n`` whole records, from as many environments as the records offer
    (first record of each first), together within ``budget`` bytes of JSON; the
    first record is taken whatever its size."""
    seen: set[str] = set()
    first, rest = [], []
    for i, r in enumerate(records):
        env = example_environment(r)
        (rest if env in seen else first).append(i)
        seen.add(env)
    # one record with tool calls, when there is one, among the first shown
    calls = next((i for i in first if b'"tool_calls"' in orjson.dumps(records[i])), None)
    first.sort(key=lambda i: (i != calls, i))
    chosen, size = [], 0
    for i in first + rest:
        if len(chosen) == n:
            break
        s = len(orjson.dumps(records[i]))
        if chosen and size + s > budget:
            continue
        chosen.append(i)
        size += s
    return [records[i] for i in sorted(chosen)]


def example_environment(record: dict) -> str:
    meta = record.get("meta") or {}
    if meta.get("agent"):
        return str(meta["agent"])
    source = meta.get("source") or [{}]
    return file_environment(str(source[0].get("file", "?")))


def examples_section(examples: list[dict]) -> str:
    if not examples:
        return ""
    return (
        "<h2 id='examples'>Examples</h2><p class='small'>Whole records, as written to "
        "train.jsonl / val.jsonl; long texts are folded (click to open), never cut.</p>"
        + "".join(_example(r) for r in examples)
    )


def _example(rec: dict) -> str:
    meta = rec.get("meta") or {}
    facts = [("environment", example_environment(rec)), ("task", meta.get("task"))]
    for k in ("reward", "pass_rate", "rollouts", "ground_truth_source", "reward_gap"):
        if meta.get(k) is not None:
            facts.append((k, num(meta[k]) if isinstance(meta[k], float) else meta[k]))
    sources = ", ".join(f"{s.get('file')}:{s.get('line')}" for s in meta.get("source") or [])
    head = " · ".join(f"{k} <code>{escape(str(v))}</code>" for k, v in facts if v is not None)
    parts = [f"<div class='example'><h3>{head}</h3><p class='small'>from {escape(sources)}</p>"]
    if "completions" in rec:
        comps = sorted(rec["completions"], key=lambda c: c.get("rank", 0))
        sides = [c.get("completion") or [] for c in comps[:2]]
        parts.append(_pair(rec.get("context") or [], sides, meta))
    elif "chosen" in rec and "rejected" in rec:
        sides = [[{"role": "assistant", "content": rec[k]}] for k in ("chosen", "rejected")]
        parts.append(_pair(rec.get("prompt") or [], sides, meta))
    elif "messages" in rec:
        parts += [_messages(rec["messages"]), _tools(rec.get("tools"))]
    elif isinstance(rec.get("responses_create_params"), dict):
        rcp = rec["responses_create_params"]
        items = rcp.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        if rcp.get("instructions"):
            items = [{"role": "system", "content": rcp["instructions"]}, *items]
        parts += ["<h4>Prompt</h4>", _messages(items), _tools(rcp.get("tools"))]
        parts.append(
            _fields({k: v for k, v in rec.items() if k not in ("meta", "responses_create_params")})
        )
    else:
        parts.append(_fields({k: v for k, v in rec.items() if k != "meta"}))
    parts.append(f"<details><summary>meta</summary>{text_block(to_json(meta))}</details></div>")
    return "".join(parts)


def _pair(context: list[dict], sides: list[list[dict]], meta: dict) -> str:
    out = [f"<h4>Context ({len(context)} messages)</h4>", _messages(context), "<div class='pair'>"]
    for name, side, key in zip(
        ("chosen", "rejected"), sides, ("chosen_reward", "rejected_reward"), strict=False
    ):
        reward = meta.get(key)
        label = f"{name}" + (f" · reward {num(reward)}" if isinstance(reward, int | float) else "")
        *earlier, last = side or [{}]
        fold = ""
        if earlier:
            fold = (
                f"<details><summary>{len(earlier)} earlier messages of this completion "
                "(its final message is below)</summary>"
                f"{_messages(earlier)}</details>"
            )
        out.append(
            f"<div class='side {name}'><h4>{escape(label)} · {len(side)} messages</h4>{fold}"
            f"{_message(last, open_=True) if last else ''}</div>"
        )
    return "".join(out) + "</div>"


def _messages(messages: list) -> str:
    return "".join(_message(m) for m in messages)


def _message(m, open_: bool = False) -> str:
    if not isinstance(m, dict):
        return text_block(to_json(m))
    role = str(m.get("role") or m.get("type") or "item")
    cls = re.sub(r"[^a-z_]", "", role.lower())
    extra = f" <small>{escape(str(m['tool_call_id']))}</small>" if m.get("tool_call_id") else ""
    parts = [f"<div class='msg r-{cls}'><div class='role'>{escape(role)}{extra}</div>"]
    if m.get("reasoning_content"):
        parts.append("<div class='small'>reasoning</div>" + text_block(str(m["reasoning_content"])))
    if "content" in m:
        parts.append(_content(m["content"], open_))
    for call in m.get("tool_calls") or ():
        fn = (call.get("function") or {}) if isinstance(call, dict) else {}
        args = fn.get("arguments")
        try:  # arguments are a JSON string: shown indented when they parse
            args = to_json(orjson.loads(args)) if isinstance(args, str) else to_json(args)
        except orjson.JSONDecodeError:
            pass
        call_id = call.get("id", "") if isinstance(call, dict) else ""
        parts.append(
            f"<div class='call'>→ call <code>{escape(str(fn.get('name')))}</code> <small>"
            f"{escape(str(call_id))}</small>{text_block(args)}</div>"
        )
    rest = {
        k: v
        for k, v in m.items()
        if k not in ("role", "type", "content", "tool_calls", "tool_call_id", "reasoning_content")
    }
    if rest:
        parts.append(text_block(to_json(rest)))
    return "".join(parts) + "</div>"


def _content(content, open_: bool = False) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return text_block(content, open_)
    if not isinstance(content, list):
        return text_block(to_json(content))
    out = []
    for p in content:
        if isinstance(p, dict) and isinstance(p.get("text"), str):
            out.append(text_block(p["text"], open_))
        elif isinstance(p, dict) and p.get("type") in ("image", "image_url", "input_image"):
            url = p.get("image") or p.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str) and re.match(
                r"data:image/[a-z+.-]+;base64,[A-Za-z0-9+/=\s]*$", url
            ):
                out.append(f"<img alt='image' style='max-width:360px' src=\"{escape(url)}\">")
            else:
                out.append(
                    f"<p class='small'>image: <code>{escape(str(url))}</code> (not loaded)</p>"
                )
        else:
            out.append(text_block(to_json(p)))
    return "".join(out)


def _tools(tools) -> str:
    if not tools:
        return ""
    names = ", ".join(
        str((t.get("function") or t).get("name")) for t in tools if isinstance(t, dict)
    )
    return (
        f"<details><summary>{len(tools)} tool schema(s): {escape(names)}</summary>"
        f"{text_block(to_json(tools))}</details>"
    )


def _fields(fields: dict) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th>"
        f"<td>{text_block(v if isinstance(v, str) else to_json(v))}</td></tr>"
        for k, v in fields.items()
    )
    return f"<table class='fields'>{rows}</table>" if rows else ""


def to_json(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def text_block(s: str, open_: bool = False) -> str:
    """The whole text; folded in <details> when long (its first line as the summary)."""
    lines = s.count("\n") + 1
    if len(s) <= LONG_CHARS and lines <= LONG_LINES:
        return f"<pre>{escape(s)}</pre>"
    first = s.strip().split("\n", 1)[0][:160]
    return (
        f"<details{' open' if open_ else ''}><summary>{escape(first)} "
        f"<span class='small'>… {len(s)} chars, {lines} lines</span></summary>"
        f"<pre>{escape(s)}</pre></details>"
    )
