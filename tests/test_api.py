"""gymray.api end to end on a real local Ray: prepare, load and submit from Python and
the CLI, on real files on disk (a generated NeMo Gym tree, and the real fixtures when
../shared is there)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from support import FIXTURES, REPO, fixture, generated

import gymray
from gymray.config import ConfigError, load_settings
from gymray.samples.generate import HERE
from gymray.storage import StorageError

pytestmark = pytest.mark.usefixtures("ray_session")


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().split(b"\n") if x]


def count_lines(paths) -> int:
    n = 0
    for p in paths:
        data = p.read_bytes()
        n += data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return n


@pytest.fixture(scope="module", params=["generated", "real"])
def gym_root(request, tmp_path_factory) -> Path:
    """A directory of NeMo Gym rollouts: one generated in the repo (every shape of the
    spec), and the real fixtures (skipped when ../shared is absent)."""
    if request.param == "real":
        from support import require_shared

        require_shared()
        return FIXTURES
    from gymray.samples.gym_shapes import gym_tree

    root = tmp_path_factory.mktemp("gym")
    gym_tree(root)
    return root


class Source:
    """Files by their NeMo Gym relative path, generated or real."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "real":
            from support import require_shared

            require_shared()

    def __call__(self, rel: str) -> Path:
        return fixture(rel) if self.kind == "real" else generated(rel)

    def task_sidecar(self) -> Path:
        """Some X_materialized_inputs.jsonl file."""
        return self(
            "resources_servers/blackjack/data/example_rollouts_materialized_inputs.jsonl"
            if self.kind == "real"
            else "resources_servers/polymath/data/example_rollouts_materialized_inputs.jsonl"
        )


@pytest.fixture(params=["generated", "real"])
def gym(request) -> Source:
    return Source(request.param)


@pytest.fixture(scope="module")
def fixtures_run(gym_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "ds"
    result = gymray.prepare(
        "sft", input=str(gym_root), output=str(out), **{"sft.reward_threshold": 0.5}
    )
    return result, out, gym_root


def test_counts_reconcile_with_every_input_line(fixtures_run):
    result, out, _ = fixtures_run
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    inputs = [Path(i["uri"]) for i in m["inputs"]]
    assert not any(p.name.endswith("_materialized_inputs.jsonl") for p in inputs)
    assert c["input_lines"] == count_lines(inputs)
    assert c["input_lines"] == c["used"] + sum(c["filtered"].values()) + sum(c["rejected"].values())
    assert c["records"]["train"] + c["records"]["val"] == c["used"]
    assert len(read_jsonl(out / "train.jsonl")) == c["records"]["train"]
    assert len(read_jsonl(out / "val.jsonl")) == c["records"]["val"] >= 1
    assert len(read_jsonl(out / "rejects.jsonl")) == sum(c["rejected"].values())
    assert len(read_jsonl(out / "filtered.jsonl")) == sum(c["filtered"].values())
    assert result.counts == c
    per_file = m["per_file"]
    assert sum(f["lines"] for f in per_file.values()) == c["input_lines"]
    assert sum(f["used"] for f in per_file.values()) == c["used"]
    # the directory holds task files too: the run says so instead of failing
    task_file = next(u for u in per_file if u.endswith("/blackjack/data/example.jsonl"))
    assert per_file[task_file]["rejected"] == per_file[task_file]["lines"] > 0
    assert any("missing_response" in w and "task files" in w for w in m["warnings"])


def test_rejects_name_file_line_and_reason(fixtures_run):
    _, out, _ = fixtures_run
    rejects = read_jsonl(out / "rejects.jsonl")
    placeholder = [r for r in rejects if r["raw"] == "<PLACEHOLDER ROW>"]
    assert placeholder and all(r["reason"] == "invalid_json" for r in placeholder)
    for r in rejects:
        raw_line = Path(r["file"]).read_bytes().split(b"\n")[r["line"] - 1]
        # cut at 64 KiB, with the original length
        assert raw_line[: 64 * 1024].decode(errors="replace") == r["raw"] and r[
            "raw_length"
        ] == len(raw_line)
        assert r["reason"] and r["detail"]


def test_openai_records_follow_the_contract(fixtures_run):
    _, out, _ = fixtures_run
    records = read_jsonl(out / "train.jsonl") + read_jsonl(out / "val.jsonl")
    assert records
    for rec in records:
        assert set(rec) == {"messages", "tools", "meta"}
        msgs = rec["messages"]
        assert msgs[-1]["role"] == "assistant" and not msgs[-1].get("tool_calls")
        calls = [c["id"] for m in msgs if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        results = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
        assert sorted(calls) == sorted(results)
        assert rec["meta"]["reward"] >= 0.5
        src = rec["meta"]["source"][0]
        original = orjson.loads(Path(src["file"]).read_bytes().split(b"\n")[src["line"] - 1])
        assert original["reward"] == rec["meta"]["reward"]


def test_no_task_in_both_splits_and_parquet_matches_jsonl(fixtures_run):
    _, out, _ = fixtures_run
    train, val = read_jsonl(out / "train.jsonl"), read_jsonl(out / "val.jsonl")
    assert not {r["meta"]["task"] for r in train} & {r["meta"]["task"] for r in val}
    table = pq.read_table(out / "parquet" / "train")
    assert table.column_names == ["messages", "tools", "meta"]
    assert [orjson.loads(x) for x in table.column("messages").to_pylist()] == [
        r["messages"] for r in train
    ]


def test_manifest_has_versions_settings_and_nemo_rl_block(fixtures_run):
    _, out, _ = fixtures_run
    m = json.loads((out / "manifest.json").read_text())
    assert m["versions"]["ray"] and m["versions"]["gymray"] == gymray.__version__
    assert m["settings"]["sft"]["reward_threshold"] == 0.5
    assert m["tools_differ"] is True
    train = m["nemo_rl"]["data"]["train"]
    assert train["dataset_name"] == "openai_format" and train["data_path"] == str(
        out / "train.jsonl"
    )
    assert train["use_preserving_dataset"] is True
    report = (out / "report.md").read_text()
    assert "invalid_json" in report and "## Rewards" in report


def test_rerun_is_byte_identical_whatever_the_block_size(fixtures_run, tmp_path):
    _, out, root = fixtures_run
    other = gymray.prepare(
        "sft",
        input=str(root),
        output=str(tmp_path / "b"),
        **{"sft.reward_threshold": 0.5, "ray.block_bytes": 65536},
    )
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl", "filtered.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert other.fingerprint == json.loads((out / "manifest.json").read_text())["fingerprint"]


def test_same_fingerprint_is_reused_and_other_settings_refused(gym, tmp_path):
    src = gym("environments/blackjack/data/example_rollouts.jsonl")
    out = tmp_path / "ds"
    first = gymray.prepare("sft", input=str(src), output=str(out), **{"sft.reward_threshold": -5})
    mtime = (out / "train.jsonl").stat().st_mtime_ns
    again = gymray.prepare("sft", input=str(src), output=str(out), **{"sft.reward_threshold": -5})
    assert again.reused and not first.reused
    assert (out / "train.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(StorageError, match="overwrite=true"):
        gymray.prepare("sft", input=str(src), output=str(out), **{"sft.reward_threshold": 0.0})
    third = gymray.prepare(
        "sft", input=str(src), output=str(out), overwrite=True, **{"sft.reward_threshold": 0.0}
    )
    assert not third.reused and third.fingerprint != first.fingerprint


def test_glob_gz_and_sidecars(gym, tmp_path):
    src = gym("environments/blackjack/data/example_rollouts.jsonl")
    d = tmp_path / "in"
    d.mkdir()
    (d / "a_rollouts.jsonl.gz").write_bytes(gzip.compress(src.read_bytes()))
    shutil.copy(src, d / "b_rollouts.jsonl")
    shutil.copy(gym.task_sidecar(), d / "b_rollouts_materialized_inputs.jsonl")
    res = gymray.prepare(
        "sft",
        input=str(d / "*.jsonl*"),
        output=str(tmp_path / "o"),
        **{"sft.reward_threshold": -5, "sft.dedup": False},
    )
    m = res.manifest
    assert sorted(Path(i["uri"]).name for i in m["inputs"]) == [
        "a_rollouts.jsonl.gz",
        "b_rollouts.jsonl",
    ]
    n = count_lines([src])
    assert m["counts"]["input_lines"] == 2 * n
    assert m["counts"]["records"]["train"] + m["counts"]["records"]["val"] == 2 * n
    assert res.dataset("train").count() == m["counts"]["records"]["train"]


def test_simple_format_and_best_of_n(gym, tmp_path):
    src = gym("benchmarks/flores200/data/example_rollouts.jsonl")
    res = gymray.prepare(
        "sft",
        input=str(src),
        output=str(tmp_path / "s"),
        **{"sft.format": "simple", "sft.reward_threshold": 0.0, "chat.reasoning": "think"},
    )
    recs = read_jsonl(tmp_path / "s" / "train.jsonl") + read_jsonl(tmp_path / "s" / "val.jsonl")
    assert recs and all(set(r) == {"input", "output", "meta"} for r in recs)
    assert all(isinstance(r["input"], str) and r["output"].startswith("<think>") for r in recs)
    assert res.manifest["nemo_rl"]["data"]["train"]["dataset_name"] == "ResponseDataset"

    multi = gym("environments/blackjack/data/example_rollouts.jsonl")
    res = gymray.prepare(
        "sft",
        input=str(multi),
        output=str(tmp_path / "b"),
        **{"sft.best_of_n": True, "sft.reward_threshold": -5, "sft.dedup": False},
    )
    recs = read_jsonl(tmp_path / "b" / "train.jsonl") + read_jsonl(tmp_path / "b" / "val.jsonl")
    by_task = {}
    for raw in multi.read_bytes().split(b"\n"):
        if raw:
            r = orjson.loads(raw)
            by_task.setdefault(r["_ng_task_index"], []).append(r["reward"])
    assert sorted(r["meta"]["task_index"] for r in recs) == sorted(by_task)
    for r in recs:
        assert r["meta"]["reward"] == max(by_task[r["meta"]["task_index"]])
    assert res.counts["filtered"].get("not_best_of_n", 0) == sum(
        len(v) for v in by_task.values()
    ) - len(by_task)


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match="sft.reward_threshold"):
        load_settings("sft", ["sft.reward_treshold=0.5"])
    with pytest.raises(ConfigError, match="split.val_fraction"):
        load_settings("sft", ["split.val_frac=0.1"])


def test_keyword_settings_merge_key_by_key_and_keep_their_values():
    from gymray.api import kwargs_overrides

    layer = kwargs_overrides(
        {"sft": {"format": "simple"}, "sft.reward_threshold": 0.8, "output": "1e5"}
    )
    s = load_settings("sft", layer)
    # a nested section and a dotted key of the same section both apply
    assert (s.sft.format, s.sft.reward_threshold, s.sft.drop_truncated) == ("simple", 0.8, True)
    assert s.output == "1e5"  # a string stays a string


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "gymray.run", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_cli_on_the_bundled_sample(tmp_path):
    """The README's first command, with the output in a temp dir."""
    p = run_cli("sft", f"output={tmp_path / 'o'}", "--prepare-only", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["command"] == "prepare" and out["ok"] and out["error"] is None
    summary = out["dataset"]
    assert "val" in summary["paths"]  # always there, null when there is no val split
    c = summary["counts"]
    assert c["rejected"] == {
        "empty_trajectory": 1,
        "invalid_json": 2,
        "missing_reward": 1,
        "not_an_object": 1,
        "reward_not_finite": 1,
        "reward_not_number": 1,
    }
    assert c["input_lines"] == 40 and c["records"]["val"] >= 1
    assert "rejected 2 x invalid_json (see rejects.jsonl)" in p.stderr
    for reason, n in c["filtered"].items():  # the reasons, not only their sum
        assert f"filtered {n} x {reason} (see filtered.jsonl)" in p.stderr
    bad = run_cli("sft", "sft.format=chatml", f"output={tmp_path / 'x'}", "--prepare-only")
    assert bad.returncode == 2 and "sft.format" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli(
        "sft", f"input={tmp_path / 'nope'}", f"output={tmp_path / 'y'}", "--prepare-only"
    )
    assert missing.returncode == 2 and "input not found" in missing.stderr


def test_bundled_sample_is_what_the_generator_writes():
    from gymray.samples.generate import HERE, build

    assert (HERE / "rollouts.jsonl").read_bytes() == build()


def test_encoded_lines_are_exactly_orjson_dumps(fixtures_run):
    from gymray.formats import encode

    _, out, _ = fixtures_run
    for raw in (out / "train.jsonl").read_bytes().split(b"\n")[:50]:
        if raw:
            record = orjson.loads(raw)
            assert encode(record)[0] == orjson.dumps(record) + b"\n" == raw + b"\n"


def test_large_files_read_as_ranges_give_the_same_bytes(fixtures_run, tmp_path):
    """Files split into ~4 KiB ranges (parsed in parallel) keep every line's number."""
    from gymray.engine.read import plan_units
    from gymray.storage import expand_inputs

    _, out, root = fixtures_run
    inputs = expand_inputs([str(root)])
    units = plan_units(inputs, 4096)
    assert len(units) > len(inputs)  # some files were split
    gymray.prepare(
        "sft",
        input=str(root),
        output=str(tmp_path / "r"),
        **{"sft.reward_threshold": 0.5, "ray.split_bytes": 4096},
    )
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl", "filtered.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "r" / name).read_bytes(), name
    for r in read_jsonl(tmp_path / "r" / "rejects.jsonl"):
        raw_line = Path(r["file"]).read_bytes().split(b"\n")[r["line"] - 1]
        assert raw_line[: 64 * 1024].decode(errors="replace") == r["raw"]


def test_prepare_leaves_the_callers_data_context_as_it_was(tmp_path):
    import ray

    ctx = ray.data.DataContext.get_current()
    before = (
        ctx.execution_options.preserve_order,
        ctx.op_resource_reservation_enabled,
        ctx.hash_shuffle_operator_actor_num_cpus_override,
    )
    gymray.prepare(
        "dpo",
        input=str(generated("environments/blackjack/data/example_rollouts.jsonl")),
        output=str(tmp_path / "d"),
    )
    after = (
        ctx.execution_options.preserve_order,
        ctx.op_resource_reservation_enabled,
        ctx.hash_shuffle_operator_actor_num_cpus_override,
    )
    assert after == before


# --------------------------------------------------------------------------- load, submit
SAMPLE = str(HERE / "rollouts.jsonl")


def test_prepare_logs_its_warnings_and_returns_something_to_look_at(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gymray"):
        ds = gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "d"))
    logged = [r.getMessage() for r in caplog.records
              if r.name == "gymray" and r.levelno == logging.WARNING]  # fmt: skip
    assert ds.manifest["warnings"] and logged == ds.manifest["warnings"]
    assert "fewer than sft.min_examples" in " ".join(logged)
    text = repr(ds)
    assert len(text) < 200 and "sft/openai" in text and str(tmp_path / "d") in text
    assert "<table>" in ds._repr_html_() and "report" in ds._repr_html_()
    first = ds.head(2)
    assert len(first) == 2 and isinstance(first[0]["messages"], list)
    row = ds.dataset("train").take(1)[0]
    assert isinstance(row["messages"], list) and isinstance(row["meta"], dict)  # not JSON text
    assert "environment" in ds.describe()


def test_load_gives_back_the_same_dataset(tmp_path):
    made = gymray.prepare("dpo", input=SAMPLE, output=str(tmp_path / "d"))
    loaded = gymray.load(str(tmp_path / "d"))
    assert loaded.fingerprint == made.fingerprint and loaded.counts == made.counts
    assert loaded.settings.algo == "dpo" and loaded.paths["train"] == made.paths["train"]
    with pytest.raises(gymray.api.StorageError, match="not a gymray dataset"):
        gymray.load(str(tmp_path))


def test_submit_before_anything_runs_checks_the_launch(tmp_path):
    ds = gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "d"),
                        **{"sft.reward_threshold": 0})  # fmt: skip
    with pytest.raises(gymray.api.ConfigError, match="job.nemo_rl_dir is not set"):
        gymray.submit(ds, dry_run=True)
    handle = None
    with pytest.raises(gymray.api.ConfigError, match="unknown setting 'job.nemo_rl_dri'"):
        handle = gymray.submit(ds, job={"nemo_rl_dri": "/x"}, dry_run=True)
    assert handle is None


def _progress(caplog) -> list[tuple[int, int]]:
    """(lines, records) of each progress line logged."""
    out = []
    for r in caplog.records:
        m = re.match(r"progress: ([\d,]+) lines.*?, ([\d,]+) records, \d+ s$", r.getMessage())
        if r.name == "gymray" and m:
            out.append(tuple(int(g.replace(",", "")) for g in m.groups()))
    return out


def test_progress_lines_count_up_to_the_input_as_blocks_finish(tmp_path, caplog):
    """Logs without a progress bar (a Ray Job's) get a line now and then: lines, bytes
    read and MB/s, records; never more often than ray.progress_s, never with 0."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):  # a part per file: 8 parts of 80 lines
        (src / f"r{i}.jsonl").write_bytes(Path(SAMPLE).read_bytes() * 2)
    run = {"sft.reward_threshold": None, "sft.dedup": False}
    with caplog.at_level(logging.INFO, logger="gymray"):
        ds = gymray.prepare("sft", input=str(src), output=str(tmp_path / "a"),
                            **{**run, "ray.progress_s": 1e-6})  # fmt: skip
    seen = _progress(caplog)
    assert len(seen) >= 5, seen
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)  # lines only grow
    assert seen[-1][0] <= ds.counts["input_lines"] == 640
    assert seen[-1][1] <= sum(ds.counts["records"].values())
    mb = sum(f.stat().st_size for f in src.iterdir()) / 1e6
    assert f"of {mb:,.0f} MB read" in " ".join(r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gymray"):
        gymray.prepare("sft", input=str(src), output=str(tmp_path / "b"),
                       **{**run, "ray.progress_s": 0})  # fmt: skip
    assert _progress(caplog) == []


LIVE = """
import sys
import ray
import gymray

ray.init(address="local", num_cpus=2, include_dashboard=False,
         object_store_memory=128 * 1024**2, log_to_driver=False)
gymray.prepare("sft", input=sys.argv[1], output=sys.argv[2],
               **{"sft.reward_threshold": None, "ray.split_bytes": 1 << 16})
"""


def test_a_terminal_gets_a_progress_line_redrawn_in_place(tmp_path):
    """A notebook's or terminal's driver, whose gymray log lines are not shown, sees
    the progress redrawn on one line (as Ray Data's bar was, before SFT ran without
    it), ending with a new line; a driver whose stderr is a file gets none."""
    import pty

    big = tmp_path / "big.jsonl"
    big.write_bytes(Path(SAMPLE).read_bytes() * 400)  # 16,000 lines, 32 parts
    outputs = {}
    for kind in ("terminal", "file"):
        if kind == "terminal":
            parent, child = pty.openpty()
        else:
            child = os.open(tmp_path / "stderr.txt", os.O_WRONLY | os.O_CREAT)
        proc = subprocess.Popen([sys.executable, "-c", LIVE, str(big), str(tmp_path / kind)],
                                stderr=child, stdout=subprocess.DEVNULL, cwd=REPO)  # fmt: skip
        os.close(child)
        chunks = []
        if kind == "terminal":
            while True:
                try:
                    chunk = os.read(parent, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(parent)
        assert proc.wait(timeout=300) == 0
        outputs[kind] = b"".join(chunks) or (tmp_path / "stderr.txt").read_bytes()
    drawn = re.findall(rb"\rgymray: progress: ([\d,]+) lines", outputs["terminal"])
    assert drawn, outputs["terminal"][-2000:]
    counts = [int(d.replace(b",", b"")) for d in drawn]
    assert counts == sorted(counts) and counts[-1] == 16_000  # the last state, then a new line
    assert re.search(rb"\rgymray: progress: 16,000 lines[^\r\n]*\r?\n", outputs["terminal"])
    assert b"progress:" not in outputs["file"]


def test_an_empty_input_file_is_named_and_no_records_gets_no_too_few_warning(tmp_path):
    """An empty file among the inputs is named; a dataset of none at all says so once
    (the CLI's error), not also 'only 0 training records ... rarely helps'."""
    (tmp_path / "in").mkdir()
    empty = tmp_path / "in" / "empty.jsonl"
    empty.write_bytes(b"")
    (tmp_path / "in" / "sample.jsonl").write_bytes(Path(SAMPLE).read_bytes())
    ds = gymray.prepare("sft", input=str(tmp_path / "in"), output=str(tmp_path / "d"))
    assert f"1 input file(s) hold no line at all (empty): {empty}" in ds.manifest["warnings"]
    alone = gymray.prepare("sft", input=str(empty), output=str(tmp_path / "e"))
    assert alone.counts["records"]["train"] == 0
    assert alone.manifest["warnings"] == [f"1 input file(s) hold no line at all (empty): {empty}"]


def test_a_refused_output_says_what_differs_from_the_dataset_there(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(Path(SAMPLE).read_bytes())
    out = str(tmp_path / "d")
    gymray.prepare("sft", input=str(src), output=out)
    with pytest.raises(StorageError) as e:
        gymray.prepare("sft", input=str(src), output=out, split={"val_fraction": 0.5})
    assert "(split.val_fraction 0.05 -> 0.5; fingerprint " in str(e.value)
    os.utime(src, ns=(1, 1))
    with pytest.raises(StorageError, match=r"\(1 input file\(s\) changed since; finger"):
        gymray.prepare("sft", input=str(src), output=out)
