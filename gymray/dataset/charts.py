"""Inline SVG charts for ``report.html``: drawn here in Python, so the page needs no
script library, no font and nothing from the network. Every label is escaped."""

from __future__ import annotations

import math
from html import escape

import numpy as np

USED, FILTERED, REJECTED = "#3b8a4a", "#e3a33b", "#c8463a"
BLUE, GREY = "#4a6fa5", "#9aa5b1"


def num(x: float) -> str:
    """A short human number: 4 significant digits, no exponent for ordinary sizes."""
    if x == 0:
        return "0"
    if abs(x) >= 1e7 or abs(x) < 1e-3:
        return f"{x:.3g}"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" class="chart">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, s: str, anchor: str = "start", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}>{escape(s)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "") -> str:
    t = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
        f'fill="{fill}">{t}</rect>'
    )


def histogram(
    edges: list[float],
    series: list[tuple[str, list[float], str]],
    *,
    width: int = 560,
    height: int = 220,
    label: str = "histogram",
) -> str:
    """Bars on the bins of ``edges``, one stacked segment per series (name, counts,
    colour); each bin is drawn the same width, its edges written below it."""
    if not series or not edges:
        return ""
    n = len(edges) - 1
    totals = [sum(s[1][i] for s in series) for i in range(n)]
    top = max(totals) or 1
    left, right, top_pad, bottom = 44, 10, 18, 34
    pw, ph = width - left - right, height - top_pad - bottom
    bw = pw / n
    body = [
        f'<line x1="{left}" y1="{top_pad + ph}" x2="{width - right}" y2="{top_pad + ph}" '
        'class="axis"/>',
        _text(left - 6, top_pad + 4, num(top), "end", "muted"),
        _text(left - 6, top_pad + ph, "0", "end", "muted"),
    ]
    for i in range(n):
        y = top_pad + ph
        tip = f"[{num(edges[i])}, {num(edges[i + 1])}{']' if i == n - 1 else ')'}"
        for name, counts, colour in series:
            h = ph * counts[i] / top
            y -= h
            title = f"{tip}: {num(counts[i])}" + (f" {name}" if name else "")
            body.append(_rect(left + i * bw + 1, y, bw - 2, h, colour, title))
        if totals[i] and n <= 24:
            body.append(_text(left + (i + 0.5) * bw, y - 3, num(totals[i]), "middle", "small"))
    step = max(1, math.ceil((n + 1) / 7))
    ticks = list(range(0, n + 1, step))
    if ticks[-1] != n:  # always label the last edge, dropping a tick too close to it
        if len(ticks) > 1 and n - ticks[-1] < step / 2:
            ticks.pop()
        ticks.append(n)
    for i in ticks:
        anchor = "start" if i == 0 else "end" if i == n else "middle"
        body.append(_text(left + i * bw, height - bottom + 14, num(edges[i]), anchor, "muted"))
    return _svg(width, height, body, label)


def sparkline(counts: list[int], edges: list[float] | None, colour: str = BLUE) -> str:
    """A tiny histogram for a table cell (counts on the run's common reward bins)."""
    width, height = 96, 22
    top = max(counts, default=0) or 1
    bw = width / max(len(counts), 1)
    body = [f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>']
    for i, c in enumerate(counts):
        h = (height - 2) * c / top if c else 0
        h = max(h, 1.5) if c else 0
        tip = f"[{num(edges[i])}, {num(edges[i + 1])}): {c}" if edges else str(c)
        body.append(_rect(i * bw + 0.5, height - 1 - h, bw - 1, h, colour, tip))
    return _svg(width, height, body, "reward distribution")


def stacked_rows(
    rows: list[tuple[str, list[int]]],
    colours: list[str],
    names: list[str],
    *,
    width: int = 900,
    label_width: int = 300,
) -> str:
    """Horizontal stacked bars, one row per label, scaled to the longest row; the
    row's total at its end."""
    row_h, gap = 16, 4
    height = len(rows) * (row_h + gap) + 4
    top = max((sum(v) for _, v in rows), default=0) or 1
    pw = width - label_width - 60
    body = []
    for r, (label, values) in enumerate(rows):
        y = 2 + r * (row_h + gap)
        shown = label if len(label) <= 46 else label[:45] + "…"
        body.append(
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
        )
        x = float(label_width)
        for v, colour, name in zip(values, colours, names, strict=True):
            w = pw * v / top
            if v:
                body.append(_rect(x, y, w, row_h, colour, f"{label}: {v} {name}"))
            x += w
        body.append(_text(x + 4, y + 12, str(sum(values)), "start", "muted"))
    return _svg(width, height, body, "lines per environment")


def stacked_bar(parts: list[tuple[str, int, str]], *, width: int = 900) -> str:
    """One bar split in its parts (name, value, colour), each labelled when it fits."""
    height = 30
    total = sum(v for _, v, _ in parts) or 1
    body, x = [], 0.0
    for name, v, colour in parts:
        w = width * v / total
        if v:
            body.append(_rect(x, 0, w, height, colour, f"{name}: {v} ({100 * v / total:.1f}%)"))
            text = f"{name} {v}"
            if w > 7 * len(text):
                body.append(_text(x + 6, 19, text, "start", "inbar"))
        x += w
    return _svg(width, height, body, "used, filtered and rejected lines")


def legend(items: list[tuple[str, str]]) -> str:
    """An HTML legend: (name, colour) swatches."""
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{escape(name)}</span>' for name, c in items)
        + "</div>"
    )


def length_bins(values: list[float], records: int, bins: int = 24) -> tuple[list[float], list]:
    """Edges and counts of a length distribution given as its sorted values or evenly
    spaced quantiles (each quantile then stands for records/len(values) records).
    Log-spaced bins when the lengths span more than a factor of 30."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return [], []
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        edges = np.array([lo, lo + 1.0])
    elif lo > 0 and hi / lo > 30:
        edges = np.geomspace(lo, hi, bins + 1)
    else:
        edges = np.linspace(lo, hi, bins + 1)
    counts = np.histogram(v, bins=edges)[0] * (records / v.size)
    return [round(float(e), 1) for e in edges], [round(float(c)) for c in counts]
