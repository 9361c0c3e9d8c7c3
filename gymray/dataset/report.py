"""``report.md``: what a person reads to see what prepare did with their rollouts."""

from __future__ import annotations

import orjson

from gymray.histogram import histogram_lines

EXAMPLE_CHARS = 1500


def render(
    manifest: dict,
    examples: list[dict],
    warnings: list[str],
    extra_sections: list[str] | None = None,
) -> str:
    c = manifest["counts"]
    lines = [
        f"# gymray {manifest['algo']} dataset",
        "",
        f"- output: `{manifest['output']}`",
        f"- format: `{manifest['format']}`",
        f"- inputs: {len(manifest['inputs'])} file(s)",
        f"- fingerprint: `{manifest['fingerprint']}`",
        "",
        "## Counts",
        "",
        "| | lines |",
        "| --- | ---: |",
        f"| input lines | {c['input_lines']} |",
        f"| used | {c['used']} |",
        f"| filtered | {sum(c['filtered'].values())} |",
        f"| rejected | {sum(c['rejected'].values())} |",
        "",
        f"Records written: train {c['records']['train']}, val {c['records']['val']}.",
        "",
    ]
    for kind in ("filtered", "rejected"):
        if c[kind]:
            lines += [
                f"### {kind.capitalize()} by reason",
                "",
                "| reason | lines |",
                "| --- | ---: |",
            ]
            lines += [f"| {r} | {n} |" for r, n in sorted(c[kind].items(), key=lambda kv: -kv[1])]
            lines.append("")
    if c["rejected"]:
        lines += [
            "Each rejected line is in `rejects.jsonl` with its file, line, field, reason and raw text.",
            "",
        ]
    if c["filtered"]:
        lines += ["Each filtered line is in `filtered.jsonl` with its file, line and reason.", ""]
    rw = manifest.get("reward", {})
    lines += ["## Rewards of parsed rollouts", ""]
    if rw.get("count"):
        lines += [
            f"{rw['count']} rollouts, min {rw['min']:.4g}, mean {rw['mean']:.4g}, max {rw['max']:.4g}.",
            "",
            "```",
        ]
        lines += histogram_lines(rw["histogram"]) + ["```", ""]
    else:
        lines += ["No parsed rollouts.", ""]
    for section in extra_sections or []:
        lines += [section, ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if examples:
        lines += ["## Examples", ""]
        for ex in examples:
            text = orjson.dumps(ex, option=orjson.OPT_INDENT_2).decode()
            if len(text) > EXAMPLE_CHARS:
                text = text[:EXAMPLE_CHARS] + "\n... (cut)"
            lines += ["```json", text, "```", ""]
    return "\n".join(lines)
