"""``report.html``: the report as one page to look at, next to ``report.md``.

Self-contained: inline CSS, charts as inline SVG (``charts.py``), a few lines of
script for the environments filter, nothing fetched (it opens from a shared file
system with no server and no network). Rollout text is untrusted: every value is
escaped. Examples are whole records: long texts are folded, never cut.
"""

from __future__ import annotations

import re
from html import escape

from gymray.dataset import charts
from gymray.dataset.charts import BLUE, FILTERED, REJECTED, USED, num
from gymray.dataset.html_examples import examples_section, text_block, to_json

TOP_ENVS = 30
VALUE_TITLES = {
    "reward_gap": "Reward gap of each pair (chosen − rejected)",
    "pass_rate": "Pass rate of each task (mean reward of its rollouts)",
    "reward": "Reward of each record's rollout",
}

CSS = """
:root{--fg:#1d2733;--muted:#66717d;--line:#dde3ea;--bg:#f6f8fa}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0;background:#fff}
main{max-width:1240px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid
var(--line);padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}h4{margin:6px 0;font-size:13px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0 0}
.meta dt{color:var(--muted)}.meta dd{margin:0}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--bg);border:1px solid var(--line);border-radius:4px;padding:6px 8px;
margin:4px 0;white-space:pre-wrap;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid
var(--line);text-align:left;vertical-align:top}th{background:var(--bg);position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.small,small{color:var(--muted);font-size:11px}.muted{fill:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:8px 28px}
.chart{max-width:100%;height:auto}.chart text{font:11px system-ui,sans-serif;fill:var(--fg)}
.chart text.muted,.chart text.small{fill:var(--muted)}.chart text.inbar{fill:#fff;
font-weight:600}.chart .axis{stroke:#aab4be}
.legend span{margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}
.warn{background:#fff7e0;border:1px solid #f0d68a;border-radius:6px;padding:6px 14px}
.bar{display:inline-block;height:9px;background:var(--c);border-radius:2px;vertical-align:middle}
.chip{display:inline-block;background:var(--bg);border:1px solid var(--line);border-radius:9px;
padding:0 6px;margin:1px;font-size:11px}
.example{border:1px solid var(--line);border-radius:8px;padding:8px 14px;margin:14px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.side{border-radius:6px;padding:4px 8px;min-width:0}.chosen{border:2px solid #9ccaa4;
background:#f3faf4}.rejected{border:2px solid #e5a9a2;background:#fdf4f3}
.msg{border-left:3px solid var(--line);padding:2px 8px;margin:6px 0}
.msg .role{font-weight:600;font-size:12px;text-transform:uppercase;color:var(--muted)}
.r-user{border-color:#4a6fa5}.r-assistant{border-color:#3b8a4a}.r-tool{border-color:#e3a33b}
.r-system,.r-developer{border-color:#8e7cc3}.call{margin:4px 0}
details>summary{cursor:pointer;color:#2b5797}details>summary .small{color:var(--muted)}
input#envq{padding:4px 8px;width:280px;margin:4px 0 8px}
.tablewrap{max-height:720px;overflow:auto;border:1px solid var(--line)}
#envs td,#envs th{white-space:nowrap}#envs td.notes{white-space:normal;min-width:150px}
#envs td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:160px}#envs{font-size:12px}
nav{margin:10px 0 0;font-size:13px}a{color:#2b5797}
.fields{width:100%}.fields th{width:200px;background:none}
"""

SCRIPT = """
document.getElementById('envq').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('#envs tbody tr').forEach(function (r) {
    r.hidden = q !== '' && r.textContent.toLowerCase().indexOf(q) < 0;
  });
});
"""


def render_html(manifest: dict, examples: list[dict], sections: list[str]) -> str:
    """The whole page: header, warnings, counts, charts, the environments table, the
    recipe's sections (markdown), whole example records and the settings."""
    body = [
        _header(manifest),
        _warnings(manifest.get("warnings") or []),
        _counts(manifest["counts"]),
        _charts(manifest),
        _environments(manifest),
        *(_markdown(s) for s in sections),
        examples_section(examples),
        _settings(manifest),
    ]
    ids = re.findall(r"<h2 id='([\w-]+)'>([^<]*)</h2>", "".join(b for b in body if b))
    nav = "<nav>" + " · ".join(f"<a href='#{i}'>{escape(t)}</a>" for i, t in ids) + "</nav>"
    body.insert(1, nav)
    title = f"gymray {manifest.get('algo', '')} dataset: {manifest.get('output', '')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(b for b in body if b)
        + f"\n</main><script>{SCRIPT}</script></body></html>\n"
    )


# ------------------------------------------------------------------ header, counts
def _header(m: dict) -> str:
    c = m["counts"]
    rows = [
        ("output", f"<code>{escape(str(m.get('output')))}</code>"),
        ("format", f"<code>{escape(str(m.get('format')))}</code>"),
        ("inputs", f"{len(m.get('inputs') or [])} file(s)"
         + (f", {len(m['tasks_files'])} task file(s)" if m.get("tasks_files") else "")),
        ("records", f"train {c['records']['train']}, val {c['records']['val']}"),
        ("fingerprint", f"<code>{escape(str(m.get('fingerprint')))}</code>"),
        ("when", escape(str(m.get("created") or "not recorded"))),
        ("versions", escape(", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))),
    ]  # fmt: skip
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<h1>gymray {escape(str(m.get('algo')))} dataset</h1><dl class='meta'>{dl}</dl>"


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f"<h2 id='warnings'>Warnings</h2><div class='warn'><ul>{items}</ul></div>"


def _counts(c: dict) -> str:
    filtered, rejected = sum(c["filtered"].values()), sum(c["rejected"].values())
    bar = charts.stacked_bar(
        [
            ("used", c["used"], USED),
            ("filtered", filtered, FILTERED),
            ("rejected", rejected, REJECTED),
        ]
    )
    out = [
        f"<h2 id='counts'>Counts</h2><p>{c['input_lines']} input lines: {c['used']} used, "
        f"{filtered} filtered, {rejected} rejected. Records written: train "
        f"{c['records']['train']}, val {c['records']['val']}.</p>",
        bar,
        charts.legend([("used", USED), ("filtered", FILTERED), ("rejected", REJECTED)]),
        "<div class='grid'>",
    ]
    for kind, colour, where in (
        ("filtered", FILTERED, "filtered.jsonl (file, line, reason)"),
        ("rejected", REJECTED, "rejects.jsonl (file, line, field, reason, raw text)"),
    ):
        reasons = sorted(c[kind].items(), key=lambda kv: (-kv[1], kv[0]))
        if not reasons:
            continue
        top = reasons[0][1] or 1
        rows = "".join(
            f"<tr><td><code>{escape(r)}</code></td><td class='n'>{n}</td><td><span class='bar' "
            f"style='--c:{colour};width:{max(2, round(160 * n / top))}px'></span></td></tr>"
            for r, n in reasons
        )
        out.append(
            f"<div><h3>{kind.capitalize()} by reason</h3><table><tr><th>reason</th>"
            f"<th class='n'>lines</th><th></th></tr>{rows}</table>"
            f"<p class='small'>Each line is in {escape(where)}.</p></div>"
        )
    out.append("</div>")
    return "".join(out)


# ------------------------------------------------------------------ charts
def _charts(m: dict) -> str:
    cells = []
    rw = m.get("reward") or {}
    if rw.get("count"):
        h = rw["histogram"]
        cells.append(
            f"<div><h3>Rewards of parsed rollouts</h3><p class='small'>{rw['count']} rollouts, "
            f"min {num(rw['min'])}, mean {num(rw['mean'])}, max {num(rw['max'])}; per "
            "environment in the table below.</p>"
            + charts.histogram(h["edges"], [("rollouts", h["counts"], BLUE)], label="rewards")
            + "</div>"
        )
    cells.append(_lengths(m.get("lengths") or {}, m.get("algo") in ("dpo", "rm")))
    values = m.get("record_values") or {}
    for split in ("train", "val"):
        s = values.get(split) or {}
        if s.get("count"):
            name = values.get("name", "value")
            cells.append(
                f"<div><h3>{escape(VALUE_TITLES.get(name, name))}: {split}</h3>"
                f"<p class='small'>{s['count']} records, min {num(s['min'])}, mean "
                f"{num(s['mean'])}, max {num(s['max'])}.</p>"
                + charts.histogram(
                    s["histogram"]["edges"], [(split, s["histogram"]["counts"], USED)], label=name
                )
                + "</div>"
            )
    return "<h2 id='distributions'>Distributions</h2><div class='grid'>" + "".join(cells) + "</div>"


def _lengths(lengths: dict, pairs: bool) -> str:
    cpt = lengths.get("chars_per_token") or 1.0
    splits = [s for s in ("train", "val") if (lengths.get(s) or {}).get("records")]
    if not splits:
        return ""
    values = [v / cpt for s in splits for v in lengths[s]["chars"]]
    edges, _ = charts.length_bins(values, 1)
    series = []
    for s, colour in (("train", BLUE), ("val", charts.GREY)):
        if s in splits:
            tokens = [v / cpt for v in lengths[s]["chars"]]
            counts = _on_edges(tokens, edges, lengths[s]["records"])
            series.append((s, counts, colour))
    total = sum(lengths[s]["records"] for s in splits)
    return (
        f"<div><h3>Record lengths (estimated tokens)</h3><p class='small'>{total} records; "
        f"characters of what NeMo RL tokenizes / {num(cpt)} characters per token"
        f"{' (context and the longer completion)' if pairs else ''}.</p>"
        + charts.histogram(edges, series, label="record lengths")
        + charts.legend([(s, c) for s, _, c in series])
        + "</div>"
    )


def _on_edges(values: list[float], edges: list[float], records: int) -> list[float]:
    counts = [0.0] * (len(edges) - 1)
    for v in values:
        i = next((i for i in range(len(edges) - 2, -1, -1) if v >= edges[i]), 0)
        counts[i] += 1
    scale = records / max(len(values), 1)
    return [round(c * scale) for c in counts]


# ------------------------------------------------------------------ environments
def _environments(m: dict) -> str:
    envs = m.get("environments") or {}
    if not envs:
        return ""
    order = sorted(envs, key=lambda e: (-envs[e].get("lines", 0), e))
    rows = [
        (e, [envs[e]["used"], sum(envs[e]["filtered"].values()), sum(envs[e]["rejected"].values())])
        for e in order[:TOP_ENVS]
    ]
    others = ""
    if len(order) > TOP_ENVS:
        rest = [envs[e] for e in order[TOP_ENVS:]]
        used = sum(x["used"] for x in rest)
        filtered = sum(sum(x["filtered"].values()) for x in rest)
        rejected = sum(sum(x["rejected"].values()) for x in rest)
        others = (
            f"<p>The other {len(rest)} environments together: {used + filtered + rejected} "
            f"lines, {used} used, {filtered} filtered, {rejected} rejected.</p>"
            + charts.stacked_bar(
                [("used", used, USED), ("filtered", filtered, FILTERED),
                 ("rejected", rejected, REJECTED)], width=600,
            )
        )  # fmt: skip
    edges = ((m.get("reward") or {}).get("histogram") or {}).get("edges")
    grpo = m.get("algo") == "grpo"
    head = (
        "<tr><th>environment</th><th class='n'>lines</th><th class='n'>used</th>"
        "<th class='n'>filtered</th><th class='n'>rejected</th><th class='n'>records<br>"
        f"train / val</th><th>reward mean ± std<br><small>[min .. max]"
        f"{' (mean = pass rate)' if grpo else ''}</small></th><th>rewards<br><small>run's bins"
        "</small></th><th class='n'>chars p50 / p90<br><small>~tokens</small></th>"
        "<th>notes</th></tr>"
    )
    body = "".join(_env_row(e, envs[e], edges) for e in order)
    return (
        f"<h2 id='environments'>Environments</h2><p>{len(envs)} environments; what became "
        f"of the lines of the {min(len(order), TOP_ENVS)} with the most input lines:</p>"
        + charts.legend([("used", USED), ("filtered", FILTERED), ("rejected", REJECTED)])
        + charts.stacked_rows(rows, [USED, FILTERED, REJECTED], ["used", "filtered", "rejected"])
        + others
        + "<p><input id='envq' type='search' placeholder='filter environments, reasons, notes'>"
        f"</p><div class='tablewrap'><table id='envs'><thead>{head}</thead><tbody>{body}"
        "</tbody></table></div>"
    )


def _env_row(name: str, e: dict, edges: list[float] | None) -> str:
    rw = e.get("reward")
    if rw:
        reward = (
            f"{num(rw['mean'])} ± {num(rw['std'])}<br><small>[{num(rw['min'])} .. "
            f"{num(rw['max'])}] n={rw['count']}</small>"
        )
        spark = charts.sparkline(rw["histogram"], edges)
    else:
        reward, spark = "<small>none</small>", ""
    ch, tok = e.get("chars"), e.get("tokens_est")
    length = (
        f"{ch['p50']} / {ch['p90']}<br><small>~{tok['p50']} / {tok['p90']}</small>" if ch else ""
    )
    notes = "".join(
        f"<span class='chip'>{escape(k)} {v}</span>"
        for k, v in sorted(e.get("notes", {}).items())
        if not k.startswith("row_key:")
    )
    rec = e["records"]
    return (
        f"<tr><td><code>{escape(name)}</code></td><td class='n'>{e['lines']}</td>"
        f"<td class='n'>{e['used']}</td><td class='n'>{_reasons(e['filtered'])}</td>"
        f"<td class='n'>{_reasons(e['rejected'])}</td><td class='n'>{rec['train']} / "
        f"{rec['val']}</td><td>{reward}</td><td>{spark}</td><td class='n'>{length}</td>"
        f"<td class='notes'>{notes}</td></tr>"
    )


def _reasons(reasons: dict) -> str:
    if not reasons:
        return "0"
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = "<br>".join(f"<small>{escape(r)} {n}</small>" for r, n in top[:2])
    more = f"<br><small>+{len(top) - 2} more</small>" if len(top) > 2 else ""
    return f"{sum(reasons.values())}<br>{shown}{more}"


# ------------------------------------------------------------------ markdown
def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{escape(p[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(p)))
    return "".join(out)


def _markdown(text: str) -> str:
    """Headings, lists, paragraphs and fenced code: enough for recipes' sections.
    Everything is escaped (``**`` and backticks are the only inline marks)."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.split("\n"):
        if code is not None:
            if line.startswith("```"):
                out.append(f"<pre>{escape(chr(10).join(code))}</pre>")
                code = None
            else:
                code.append(line)
        elif line.startswith("```"):
            flush()
            code = []
        elif h := re.match(r"(#{1,6})\s+(.*)", line):
            flush()
            level = min(max(len(h.group(1)), 2), 6)
            slug = re.sub(r"[^a-z0-9]+", "-", h.group(2).lower()).strip("-")
            anchor = f" id='s-{slug}'" if level == 2 and slug else ""
            out.append(f"<h{level}{anchor}>{_inline(h.group(2))}</h{level}>")
        elif li := re.match(r"\s*[-*]\s+(.*)", line):
            if para:
                flush()
            items.append(li.group(1))
        elif not line.strip():
            flush()
        elif items:
            items[-1] += " " + line.strip()
        else:
            para.append(line.strip())
    if code is not None:
        out.append(f"<pre>{escape(chr(10).join(code))}</pre>")
    flush()
    return "\n".join(out)


# ------------------------------------------------------------------ settings
def _settings(m: dict) -> str:
    settings = m.get("settings") or {}
    algo = m.get("algo")
    shown = {k: settings[k] for k in (algo, "chat", "split") if k in settings}
    per_file = m.get("per_file") or {}
    files = "".join(
        f"<tr><td><code>{escape(f)}</code></td><td class='n'>{c.get('lines')}</td><td class='n'>"
        f"{c.get('used')}</td><td class='n'>{c.get('filtered')}</td><td class='n'>"
        f"{c.get('rejected')}</td><td>{escape(str(c.get('top_reject', '')))}</td></tr>"
        for f, c in sorted(per_file.items(), key=lambda kv: (-kv[1].get("lines", 0), kv[0]))
    )
    return (
        "<h2 id='settings'>Settings and inputs</h2><details><summary>settings ("
        + escape(", ".join(shown))
        + f")</summary>{text_block(to_json(shown))}</details><details><summary>"
        f"{len(per_file)} input files: lines, used, filtered, rejected</summary><table><tr>"
        "<th>file</th><th>lines</th><th>used</th><th>filtered</th><th>rejected</th>"
        f"<th>top reject</th></tr>{files}"
        "</table></details>"
    )
