"""report.html: a self-contained page (inline CSS and SVG, nothing fetched), every
environment in its table, untrusted text escaped, example pairs whole; and one
real report opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

import gymray
from gymray.config import SAMPLE_INPUT
from gymray.dataset.html import TOP_ENVS, render_html
from gymray.dataset.html_examples import choose_examples

HOSTILE = "<script>alert(1)</script>"
ATTR = "\"'><img src=x onerror=alert(2)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class EnvRows(HTMLParser):
    """The first cell's text of each body row of the environments table."""

    def __init__(self):
        super().__init__()
        self.rows: list[str] = []
        self.tags: dict[str, int] = {}
        self._in_table = self._in_body = False
        self._cell = -1
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "table" and dict(attrs).get("id") == "envs":
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self._cell = -1
        elif self._in_body and tag == "td":
            self._cell += 1
            self._text = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = self._in_body = False
        elif self._in_body and tag == "td" and self._cell == 0:
            self.rows.append("".join(self._text))

    def handle_data(self, data):
        if self._in_body and self._cell == 0:
            self._text.append(data)


def parse(page: str) -> EnvRows:
    p = EnvRows()
    p.feed(page)
    return p


def env(lines: int, used: int, reward: float | None = 0.5, **kw) -> dict:
    e = {
        "lines": lines,
        "used": used,
        "filtered": {"tied_rewards": lines - used} if lines > used else {},
        "rejected": {},
        "records": {"train": used, "val": 0},
        "notes": {"content:tool_calls": 1},
        **kw,
    }
    if reward is not None:
        e["reward"] = {
            "count": lines, "mean": reward, "std": 0.1, "min": 0.0, "max": 1.0,
            "histogram": [1, 0, lines - 1],
        }  # fmt: skip
        e["chars"] = {"p50": 900, "p90": 2000, "max": 4000}
        e["tokens_est"] = {"p50": 257, "p90": 571, "max": 1142}
    return e


def manifest(envs: dict, algo: str = "dpo") -> dict:
    lines = sum(e["lines"] for e in envs.values())
    used = sum(e["used"] for e in envs.values())
    return {
        "algo": algo,
        "format": "preference",
        "output": "/shared/ds/run",
        "fingerprint": "abc123",
        "created": "2026-01-02T03:04:05+00:00",
        "inputs": [{"uri": "/in/a.jsonl", "size": 1, "mtime_ns": 1}],
        "counts": {
            "input_lines": lines + 2,
            "used": used,
            "filtered": {"tied_rewards": lines - used},
            "rejected": {HOSTILE: 2},
            "records": {"train": used, "val": 0},
        },
        "reward": {
            "count": lines,
            "min": 0.0,
            "max": 1.0,
            "mean": 0.5,
            "histogram": {"edges": [0.0, 0.5, 0.75, 1.0], "counts": [1, 2, lines - 3]},
        },  # fmt: skip
        "environments": envs,
        "lengths": {
            "chars_per_token": 3.5,
            "train": {"records": 3, "chars": [350, 3500, 35000]},
            "val": {"records": 0, "chars": []},
        },
        "record_values": {
            "name": "reward_gap",
            "train": {
                "count": 3,
                "min": 0.2,
                "max": 1.0,
                "mean": 0.6,
                "histogram": {"edges": [0.2, 0.6, 1.0], "counts": [1, 2]},
            },  # fmt: skip
            "val": {"count": 0},
        },
        "per_file": {
            "/in/a.jsonl": {"lines": lines + 2, "used": used, "filtered": 1, "rejected": 2}
        },
        "warnings": [f"warning with {HOSTILE}"],
        "settings": {algo: {"min_gap": 0.2}, "chat": {}, "split": {}},
        "versions": {"gymray": "0.1.0"},
    }


def pair(chosen: str, rejected: str, agent: str = "math") -> dict:
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}
    return {
        "context": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"question {HOSTILE}"},
        ],
        "completions": [
            {
                "rank": 0,
                "completion": [
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "c1", "content": f"result {ATTR}"},
                    {"role": "assistant", "content": chosen},
                ],
            },
            {"rank": 1, "completion": [{"role": "assistant", "content": rejected}]},
        ],  # fmt: skip
        "meta": {
            "task": "t1",
            "agent": agent,
            "source": [{"file": "/in/a.jsonl", "line": 1}],
            "chosen_reward": 1.0,
            "rejected_reward": 0.25,
            "reward_gap": 0.75,
        },  # fmt: skip
    }


def test_every_environment_is_a_row_of_the_table_sorted_by_lines():
    envs = {f"env_{i:02d}": env(10 + i, i % 5) for i in range(TOP_ENVS + 12)}
    envs[HOSTILE] = env(3, 0, reward=None)
    page = render_html(manifest(envs), [], [])
    rows = parse(page).rows
    assert sorted(rows) == sorted(envs)
    assert rows == sorted(envs, key=lambda e: (-envs[e]["lines"], e))
    assert "The other 13 environments together" in page  # past the chart's top 30


def test_hostile_text_is_escaped_everywhere():
    envs = {HOSTILE: env(5, 2), ATTR: env(4, 1)}
    section = f"## Pairs {HOSTILE}\n\n- item `{HOSTILE}`\n- **bold** {ATTR}\n\n```\n{HOSTILE}\n```"
    page = render_html(manifest(envs), [pair(HOSTILE, ATTR, agent=HOSTILE)], [section])
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the page's own filter box
    assert escape(HOSTILE) in page and "<strong>bold</strong>" in page
    assert re.search(r"<h2 id='s-[a-z0-9-]+'>Pairs &lt;script&gt;", page)  # an anchor
    assert "<li>item <code>" in page and "<pre>" in page
    assert parse(page).tags.get("img", 0) == 0


def test_dpo_examples_show_context_chosen_and_rejected_whole():
    chosen = "\n".join(f"step {i}: the chosen reasoning goes on" for i in range(400))
    rejected = "rejected answer " * 2000
    page = render_html(manifest({"math": env(4, 2)}), [pair(chosen, rejected)], [])
    assert escape(chosen) in page and escape(rejected) in page  # folded, never cut
    assert "question " + escape(HOSTILE) in page  # the context
    assert "chosen · reward 1" in page and "rejected · reward 0.25" in page
    assert "<code>calc</code>" in page and "result " + escape(ATTR) in page
    # the binary format too
    binary = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": chosen,
        "rejected": rejected,
        "meta": {"chosen_reward": 1.0, "rejected_reward": 0.0, "source": []},
    }
    page = render_html(manifest({"math": env(4, 2)}), [binary], [])
    assert escape(chosen) in page and escape(rejected) in page


def test_the_page_references_nothing_outside_itself():
    records = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see"},
                        {"type": "image", "image": "https://example.com/cat.png"},
                        {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo="},
                    ],
                },
                {"role": "assistant", "content": "a cat, see http://example.com"},
            ],  # fmt: skip
            "tools": [],
            "meta": {"reward": 1.0, "source": [{"file": "/in/a.jsonl", "line": 2}]},
        }
    ]
    page = render_html(manifest({"vision": env(2, 1)}, algo="sft"), records, ["See `x`."])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page and "<link" not in page
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in page  # inline images only
    assert "https://example.com/cat.png</code> (not loaded)" in page


def test_examples_come_from_several_environments_within_a_budget():
    records = [pair("c", "r", agent=a) for a in ("a", "a", "a", "b", "c")]
    assert [r["meta"]["agent"] for r in choose_examples(records, n=3)] == ["a", "b", "c"]
    big = pair("x" * 5000, "y", agent="big")
    assert choose_examples([big, *records], n=5, budget=1000) == [big]  # the first, whole


@pytest.fixture(scope="module")
def browser() -> str:
    """The Chromium binary; skips without one (fails where CI sets GYMRAY_REQUIRE_CHROMIUM=1)."""
    if CHROMIUM is None:
        reason = "no chromium or chromium-browser on PATH (Debian: apt-get install chromium)"
        if os.environ.get("GYMRAY_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{reason}; GYMRAY_REQUIRE_CHROMIUM=1")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def sample_report(browser, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("html") / "dpo"
    gymray.prepare("dpo", input=SAMPLE_INPUT, output=str(out))
    return out


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_a_real_report_renders_in_headless_chromium(sample_report, tmp_path):
    m = json.loads((sample_report / "manifest.json").read_text())
    assert m["files"]["report_html"] == "report.html"
    page = sample_report / "report.html"
    url = page.resolve().as_uri()
    dom = chromium("--dump-dom", url, profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = parse(dom.stdout)
    assert sorted(rendered.rows) == sorted(m["environments"]) and rendered.rows
    assert rendered.tags.get("svg", 0) >= 4  # the charts
    assert "chosen · reward" in dom.stdout and "rejected · reward" in dom.stdout
    png = tmp_path / "report.png"
    shot = chromium(f"--screenshot={png}", "--window-size=1280,2000", url, profile=tmp_path / "p2")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)
