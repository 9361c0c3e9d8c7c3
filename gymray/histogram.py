"""Reward summaries and text histograms, for reports and recipes' explanations."""

from __future__ import annotations

import numpy as np

HIST_BINS = 10


def reward_summary(rewards: np.ndarray) -> dict:
    if rewards.size == 0:
        return {"count": 0}
    lo, hi = float(rewards.min()), float(rewards.max())
    edges = np.linspace(lo, hi, HIST_BINS + 1) if hi > lo else np.array([lo, lo + 1.0])
    counts, edges = np.histogram(rewards, bins=edges)
    return {
        "count": int(rewards.size),
        "min": lo,
        "max": hi,
        "mean": float(rewards.mean()),
        "histogram": {
            "edges": [round(float(e), 6) for e in edges],
            "counts": [int(c) for c in counts],
        },
    }


def histogram_lines(hist: dict, width: int = 40) -> list[str]:
    edges, counts = hist["edges"], hist["counts"]
    top = max(counts) or 1
    out = []
    for i, c in enumerate(counts):
        bar = "#" * max(1 if c else 0, round(width * c / top))
        out.append(
            f"  [{edges[i]:>10.4g}, {edges[i + 1]:>10.4g}{']' if i == len(counts) - 1 else ')'} {c:>8}  {bar}"
        )
    return out
