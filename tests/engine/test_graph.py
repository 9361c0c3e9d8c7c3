"""gymray.engine.graph: DPO and GRPO end to end on Ray, grouping across nodes and
blocks, the key shuffle against the whole-rollout shuffle, faults mid-shuffle."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from support import REPO, fixture, generated, read_jsonl, recipe_spec

import gymray
from gymray.engine import graph, stream
from gymray.samples.generate import message, rollout, user
from gymray.samples.gym_shapes import repeats_tree

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def repeats(tmp_path_factory):
    """30 blackjack tasks x 4 rollouts, rewards spread, every 5th task tied, the lines
    of one task scattered over 3 files (as a collection run writes them)."""
    return repeats_tree(tmp_path_factory.mktemp("rep") / "rollouts")


def test_dpo_on_repeats_accounts_for_every_rollout(repeats, tmp_path):
    res = gymray.prepare("dpo", input=str(repeats), output=str(tmp_path / "d"))
    c = res.counts
    assert c["input_lines"] == 120 == c["used"] + sum(c["filtered"].values())
    assert c["filtered"]["tied_rewards"] == 6 * 4
    pairs = read_jsonl(tmp_path / "d" / "train.jsonl") + read_jsonl(tmp_path / "d" / "val.jsonl")
    assert len(pairs) == 24 == c["records"]["train"] + c["records"]["val"]
    assert c["used"] == 48
    for p in pairs:
        ranks = [x["rank"] for x in p["completions"]]
        assert ranks == [0, 1]
        assert p["completions"][0]["completion"] != p["completions"][1]["completion"]
        assert p["meta"]["reward_gap"] == 2.0  # best 1.0 vs worst -1.0
        assert p["completions"][0]["completion"][-1]["role"] == "assistant"
    assert res.manifest["nemo_rl"]["data"]["train"]["dataset_name"] == "PreferenceDataset"
    assert "## Pairs" in (tmp_path / "d" / "report.md").read_text()


def test_dpo_no_pairs_report_says_which_setting(repeats, tmp_path):
    res = gymray.prepare(
        "dpo", input=str(repeats), output=str(tmp_path / "d"), **{"dpo.min_gap": 5}
    )
    assert res.counts["records"] == {"train": 0, "val": 0}
    report = (tmp_path / "d" / "report.md").read_text()
    assert "Why no pairs" in report and "dpo.min_gap=2 would make pairs in 24 tasks" in report
    assert any("dpo.min_gap" in w for w in res.manifest["warnings"])
    # the suggestion was re-decided: taking it makes exactly those pairs
    again = gymray.prepare(
        "dpo", input=str(repeats), output=str(tmp_path / "d2"), **{"dpo.min_gap": 2}
    )
    assert sum(again.counts["records"].values()) == 24


def test_grpo_pass_rate_and_math(repeats, tmp_path):
    res = gymray.prepare(
        "grpo", input=str(repeats), output=str(tmp_path / "g"), **{"grpo.pass_rate": [0.0, 0.9]}
    )
    rows = read_jsonl(tmp_path / "g" / "train.jsonl") + read_jsonl(tmp_path / "g" / "val.jsonl")
    assert res.manifest["format"] == "nemo_gym"
    assert len(rows) == 24  # the 6 all-solved tasks are out of range
    assert res.counts["filtered"]["pass_rate_out_of_range"] == 24
    for r in rows:
        assert r["agent_ref"]["name"] == "bj" and r["expected_answer"] == "stand"
        assert "temperature" not in r["responses_create_params"]
        assert 0.0 <= r["meta"]["pass_rate"] <= 0.9
    res = gymray.prepare(
        "grpo", input=str(repeats), output=str(tmp_path / "m"), **{"grpo.format": "math"}
    )
    c = res.counts
    assert c["records"]["train"] + c["records"]["val"] == 0
    assert c["filtered"]["not_single_user_prompt"] > 0  # blackjack prompts have two user turns


def test_grpo_math_joins_ground_truth_from_tasks_file(tmp_path):
    src = fixture("resources_servers/polymath/data/example_rollouts.jsonl")
    tasks = fixture("resources_servers/polymath/data/example_rollouts_materialized_inputs.jsonl")
    res = gymray.prepare(
        "grpo",
        input=str(src),
        output=str(tmp_path / "p"),
        tasks=str(tasks),
        **{"grpo.format": "math", "split.val_fraction": 0},
    )
    rows = read_jsonl(tmp_path / "p" / "train.jsonl")
    assert rows and all(isinstance(r["ground_truth"], str) and r["ground_truth"] for r in rows)
    assert res.manifest["stats"]["notes"]
    assert "Ground truth found" in (tmp_path / "p" / "report.md").read_text()


def test_grpo_math_joins_ground_truth_from_generated_tasks_file(tmp_path):
    """The same join on a generated polymath: the rollouts lack expected_answer, its
    _materialized_inputs rows have it, and every row gets it from there."""
    from gymray.samples.gym_shapes import gym_tree

    tree = gym_tree(tmp_path / "gym")
    rel = "resources_servers/polymath/data/example_rollouts.jsonl"
    rows_in = tree["rollouts"][rel]
    assert not any("expected_answer" in r for r in rows_in)
    truth = {r["_ng_task_index"]: r["expected_answer"] for r in tree["tasks"][
        rel.replace(".jsonl", "_materialized_inputs.jsonl")]}  # fmt: skip
    res = gymray.prepare(
        "grpo",
        input=str(tmp_path / "gym" / rel),
        output=str(tmp_path / "p"),
        tasks=str(tmp_path / "gym" / rel.replace(".jsonl", "_materialized_inputs.jsonl")),
        **{"grpo.format": "math", "split.val_fraction": 0},
    )
    rows = read_jsonl(tmp_path / "p" / "train.jsonl")
    assert len(rows) == len(truth) == res.counts["records"]["train"]
    assert sorted(r["ground_truth"] for r in rows) == sorted(truth.values())
    assert "Ground truth found" in (tmp_path / "p" / "report.md").read_text()


def test_task_ranges_cut_the_hashes_into_equal_ranges():
    from gymray.engine.grouped import task_ranges

    for n in (2, 3, 7, 1024):
        bounds = task_ranges(n)
        edges = [-(1 << 63), *bounds, 1 << 63]
        widths = {b - a for a, b in zip(edges[:-1], edges[1:], strict=True)}
        assert len(bounds) == n - 1 and max(widths) - min(widths) <= 1
    assert task_ranges(1) == []


@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_grouped_outputs_do_not_depend_on_the_number_of_ranges(repeats, tmp_path, algo):
    """A task's rollouts are grouped whole whatever the number of task-hash ranges:
    one, a few, more ranges than tasks (30)."""
    outs = {}
    for n in (1, 2, 7, 64):
        res = gymray.prepare(
            algo, input=str(repeats), output=str(tmp_path / str(n)), **{"ray.partitions": n}
        )
        outs[n] = [(Path(res.output) / f).read_bytes() for f in OUTPUTS]
        if algo == "dpo":
            assert res.counts["records"]["train"] + res.counts["records"]["val"] == 24
    assert outs[1] == outs[2] == outs[7] == outs[64]


@pytest.mark.parametrize("shuffle", ["keys", "rollouts"])
def test_grouped_parquet_files_are_the_same_whatever_the_blocks_read(repeats, tmp_path, shuffle):
    """The task-hash ranges are fixed, not sampled: the same ranges give the same
    Parquet files, byte for byte, however the input was cut into blocks, and into
    read units (many units: the parsed rows are coalesced into fewer blocks before the
    sort, so that no piece of it is small enough to pass through the driver)."""
    from gymray.config import Settings
    from gymray.engine.read import plan_units, sort_layout
    from gymray.storage import expand_inputs

    inputs = expand_inputs([str(repeats)])
    units = plan_units(inputs, 4096)
    many = Settings(algo="dpo", ray={"partitions": 4, "split_bytes": 4096})
    tasks = graph.unit_tasks(inputs, units, 4096, graph.cluster_cpus())
    assert sort_layout(inputs, many, len(tasks), shuffle == "keys")[1] > 1  # blocks a split
    files = {}
    for name, sets in {
        "blocks 4 KiB": {"ray.block_bytes": 4096},
        "blocks 1 MiB": {"ray.block_bytes": 1 << 20},
        "units 4 KiB": {"ray.split_bytes": 4096},
    }.items():
        res = gymray.prepare(
            "dpo", input=str(repeats), output=str(tmp_path / name.replace(" ", "_")),
            **{"ray.partitions": 4, "ray.shuffle": shuffle, **sets},
        )  # fmt: skip
        assert res.counts["records"]["train"] + res.counts["records"]["val"] == 24
        root = Path(res.output) / "parquet"
        files[name] = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.parquet")}
    assert len(files["blocks 4 KiB"]) > 2
    assert files["blocks 4 KiB"] == files["blocks 1 MiB"] == files["units 4 KiB"]


MULTINODE = textwrap.dedent(
    """
    import sys, ray
    from ray.cluster_utils import Cluster
    import gymray
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2, resources={"w1": 1})
    cluster.add_node(num_cpus=2, resources={"w2": 1})
    ray.init(address=cluster.address)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    ray.data.DataContext.get_current().enable_progress_bars = False
    for algo, out in (("dpo", sys.argv[2]), ("grpo", sys.argv[3])):
        gymray.prepare(algo, input=sys.argv[1], output=out,
                       **{"ray.block_bytes": 4096, "ray.partitions": 4})
    # per rollout: plain tasks, spread over the nodes, a part per 8 KiB of lines
    gymray.prepare("sft", input=sys.argv[1], output=sys.argv[4], **SFT)
    ray.shutdown()
    cluster.shutdown()
    """
)
SFT_SMALL = {"sft.reward_threshold": 0, "ray.block_bytes": 4096, "ray.split_bytes": 8192}


def test_grouping_across_nodes_and_blocks_matches_single_node(repeats, tmp_path):
    """Tiny blocks and 4 partitions on a 3-node cluster: the rollouts of a task
    arrive on different nodes and blocks; outputs equal the single-node run's. SFT's
    tasks, a part per 8 KiB, spread over the nodes: the same."""
    single_d = gymray.prepare("dpo", input=str(repeats), output=str(tmp_path / "sd"))
    single_g = gymray.prepare("grpo", input=str(repeats), output=str(tmp_path / "sg"))
    single_s = gymray.prepare("sft", input=str(repeats), output=str(tmp_path / "ss"),
                              **{"sft.reward_threshold": 0})  # fmt: skip
    outs = [str(tmp_path / d) for d in ("md", "mg", "ms")]
    p = subprocess.run(
        [sys.executable, "-c", f"SFT = {SFT_SMALL!r}\n" + MULTINODE, str(repeats), *outs],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    multi_s = gymray.load(outs[2])
    assert multi_s.manifest["stats"]["parts"] > 3 * single_s.manifest["stats"]["parts"]
    for single, multi in ((single_d, "md"), (single_g, "mg"), (single_s, "ms")):
        for name in ("train.jsonl", "val.jsonl", "filtered.jsonl", "rejects.jsonl"):
            want = (Path(single.output) / name).read_bytes()
            assert want == (tmp_path / multi / name).read_bytes(), (multi, name)
    assert single_d.counts["records"]["train"] + single_d.counts["records"]["val"] == 24


PARSED_STAY = textwrap.dedent(
    """
    import json, ray
    import pyarrow as pa
    from ray.cluster_utils import Cluster
    from gymray.engine import grouped
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1, resources={"w1": 1})
    ray.init(address=cluster.address)

    @ray.remote(resources={"w1": 1})
    def parse():  # a parse task on the other node, yielding blocks
        for i in range(3):
            yield pa.table({"x": list(range(500_000))})

    (blocks,) = grouped._parsed([parse.remote()], 3, lambda: None)
    head = ray.get_runtime_context().get_node_id()
    where = ray.experimental.get_object_locations(blocks)
    print(json.dumps({"blocks": len(blocks),
                      "on_head": sum(head in w["node_ids"] for w in where.values())}))
    ray.shutdown()
    cluster.shutdown()
    """
)


def test_parsed_blocks_stay_on_the_node_that_parsed_them():
    """The driver waits for the parse tasks' blocks to hand them to the split tasks: it
    must not pull every parsed block to its own node (``ray.wait``'s ``fetch_local``
    does, block by block, for a generator)."""
    p = subprocess.run([sys.executable, "-c", PARSED_STAY], capture_output=True, text=True,
                       cwd=REPO, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert orjson.loads(p.stdout.strip().splitlines()[-1]) == {"blocks": 3, "on_head": 0}


FAULTY = textwrap.dedent(
    """
    import os, signal, sys, threading, ray
    from ray.cluster_utils import Cluster
    import gymray
    sys.path.insert(0, "tests")
    from support import processes_titled
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2, resources={"w1": 1})
    doomed = cluster.add_node(num_cpus=2, resources={"w2": 1})
    ray.init(address=cluster.address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    fault, killed = sys.argv[4], []

    def strike(done):
        # once per run, as soon as a worker runs a task of the shuffle
        while not done.is_set():
            for pid in processes_titled(b"ray::split_ranges", b"ray::group_range"):
                if fault == "worker":
                    os.kill(pid, signal.SIGKILL)
                else:
                    cluster.remove_node(doomed)
                killed.append(pid)
                return

    for algo, out in (("dpo", sys.argv[2]), ("grpo", sys.argv[3])):
        done = threading.Event()
        if fault == "worker" or not killed:  # a node is removed once
            threading.Thread(target=strike, args=(done,), daemon=True).start()
        gymray.prepare(algo, input=sys.argv[1], output=out,
                       **{"ray.block_bytes": 4096, "ray.partitions": 4})
        done.set()
    print("struck", len(killed))
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.parametrize("fault", ["worker", "node"])
def test_a_lost_shuffle_worker_or_node_changes_nothing(repeats, tmp_path, fault):
    """Killing a worker while it runs a task of the shuffle, or removing a node then,
    while DPO and GRPO group: the run completes, and its outputs equal a clean run's
    byte for byte."""
    clean_d = gymray.prepare("dpo", input=str(repeats), output=str(tmp_path / "cd"))
    clean_g = gymray.prepare("grpo", input=str(repeats), output=str(tmp_path / "cg"))
    args = [str(repeats), str(tmp_path / "fd"), str(tmp_path / "fg"), fault]
    p = subprocess.run([sys.executable, "-c", FAULTY, *args], capture_output=True, text=True,
                       cwd=REPO, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert ("struck 2" if fault == "worker" else "struck 1") in p.stdout, p.stdout
    for clean, faulty in ((clean_d, tmp_path / "fd"), (clean_g, tmp_path / "fg")):
        for name in ("train.jsonl", "val.jsonl", "filtered.jsonl", "rejects.jsonl"):
            assert (Path(clean.output) / name).read_bytes() == (faulty / name).read_bytes(), name


@pytest.fixture(scope="module")
def mixed(repeats, tmp_path_factory):
    """The repeats plus bad lines (rejects) and a file with Gym's odd shapes."""
    d = tmp_path_factory.mktemp("mixed")
    for p in sorted(repeats.iterdir()):
        (d / p.name).write_bytes(p.read_bytes())
    (d / "bad.jsonl").write_bytes(
        b'{"reward": 1.0\n[1, 2]\n{"responses_create_params": {"input": []}, "reward": 0.5}\n'
    )
    for rel in ("resources_servers/polymath/data/example_rollouts.jsonl",
                "shapes/data/example_rollouts.jsonl"):  # fmt: skip
        (d / f"{rel.split('/')[-3]}_rollouts.jsonl").write_bytes(generated(rel).read_bytes())
    return d


OUTPUTS = ("train.jsonl", "val.jsonl", "filtered.jsonl", "rejects.jsonl")


@pytest.mark.parametrize(
    "algo, extra",
    [
        ("dpo", {"dpo.pairing": "all", "dpo.min_gap": 0.4}),
        ("dpo", {"dpo.strategy": "stratified", "dpo.format": "binary"}),
        ("grpo", {"grpo.pass_rate": [0.0, 0.9]}),
        ("grpo", {"grpo.format": "math"}),
        ("sft", {"sft.best_of_n": True, "sft.reward_threshold": 0.0}),
    ],
)
def test_key_shuffle_builds_what_the_whole_rollout_shuffle_builds(mixed, tmp_path, algo, extra):
    """The default shuffle carries keys and reads used lines back by offset; its
    outputs are byte for byte those of shuffling whole rollouts."""
    common = {"ray.block_bytes": 8192, "ray.partitions": 3, **extra}
    runs = {}
    for mode in ("keys", "rollouts"):
        runs[mode] = gymray.prepare(
            algo, input=str(mixed), output=str(tmp_path / mode), **common, **{"ray.shuffle": mode}
        )
        assert runs[mode].manifest["stats"]["shuffle"] == mode
    assert runs["keys"].counts == runs["rollouts"].counts
    assert runs["keys"].counts["rejected"]  # the bad lines went through both ways
    for name in OUTPUTS:
        assert (tmp_path / "keys" / name).read_bytes() == (
            tmp_path / "rollouts" / name
        ).read_bytes(), name


def test_gz_inputs_shuffle_rollouts_or_keys_from_scratch_copies(repeats, tmp_path):
    """.gz lines cannot be read back by offset: without ray.scratch they shuffle
    whole rollouts; with it, uncompressed copies there let them shuffle keys
    (copies removed after). Same outputs every way."""
    import gzip

    from gymray.errors import ConfigError

    gz = tmp_path / "gz"
    gz.mkdir()
    for p in sorted(repeats.iterdir()):
        (gz / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    plain = gymray.prepare("dpo", input=str(repeats), output=str(tmp_path / "p"))
    packed = gymray.prepare("dpo", input=str(gz), output=str(tmp_path / "z"))
    copied = gymray.prepare(
        "dpo",
        input=str(gz),
        output=str(tmp_path / "c"),
        **{"ray.scratch": str(scratch), "ray.split_bytes": 4096},
    )
    assert plain.manifest["stats"]["shuffle"] == "keys"
    assert packed.manifest["stats"]["shuffle"] == "rollouts"
    assert copied.manifest["stats"]["shuffle"] == "keys"
    assert list(scratch.iterdir()) == []
    for name in OUTPUTS:
        assert (tmp_path / "z" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name
    plain_rows = read_jsonl(tmp_path / "p" / "train.jsonl")
    packed_rows = read_jsonl(tmp_path / "z" / "train.jsonl")
    assert packed_rows[0]["meta"]["source"][0]["file"].endswith(".jsonl.gz")  # the user's names
    for a, b in zip(plain_rows, packed_rows, strict=True):
        for s in a["meta"]["source"] + b["meta"]["source"]:
            s["file"] = Path(s["file"]).name.removesuffix(".gz")
        assert a == b
    with pytest.raises(ConfigError, match="ray.scratch"):
        gymray.prepare("dpo", input=str(gz), output=str(tmp_path / "k"), **{"ray.shuffle": "keys"})
    assert not (tmp_path / "k").exists()


def test_line_offsets_point_at_each_line_whole_files_and_ranges(mixed):
    """Every line read can be read again by itself at its offset, in whole-file
    reads with blocks smaller than a line and in byte-range reads."""
    from gymray.engine.read import plan_units, read_lines
    from gymray.storage import expand_inputs

    inputs = expand_inputs([str(mixed)])
    for units in (plan_units(inputs, 1 << 30), plan_units(inputs, 3000)):
        seen = 0
        for fid, span in units:
            data = Path(inputs[fid].path).read_bytes()
            for block in read_lines(inputs[fid], fid, 1024, None, span):
                for off, raw, line in zip(
                    block.column("offset").to_pylist(),
                    block.column("raw").to_pylist(),
                    block.column("line").to_pylist(),
                    strict=True,
                ):
                    assert data[off : off + len(raw)] == raw
                    assert data[:off].count(b"\n") == line - 1
                    seen += 1
        assert seen == sum(Path(f.path).read_bytes().count(b"\n") for f in inputs)
    assert any(span for _, span in plan_units(inputs, 3000))


def test_keys_are_a_small_fraction_of_the_rollouts(mixed):
    """What the default shuffle moves: a key per rollout, not the rollout."""
    from gymray.config import Settings
    from gymray.engine.blocks import parse_rollouts, summarize_lines
    from gymray.engine.read import read_lines
    from gymray.storage import expand_inputs

    inputs = expand_inputs([str(mixed)])
    spec = recipe_spec(Settings(algo="dpo"), inputs)
    raw = keys = whole = 0
    for fid, f in enumerate(inputs):
        for block in read_lines(f, fid, 1 << 20):
            raw += block.column("raw").nbytes
            keys += summarize_lines(block, spec).nbytes
            whole += parse_rollouts(block, spec).nbytes
    # whole rollouts travel LZ4-compressed, and generated rollouts compress well
    # (~4x): keys are still well under half of them, and a tenth of the raw lines
    assert keys * 2 < whole and keys * 10 < raw, (keys, whole, raw)


def test_a_line_rewritten_between_the_two_reads_is_an_error_naming_it(tmp_path):
    import zlib

    from gymray.engine.read import LineReader
    from gymray.errors import InputChanged
    from gymray.storage import expand_inputs

    p = tmp_path / "r_rollouts.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    (f,) = expand_inputs([str(p)])
    with LineReader([f], None) as reader:
        assert reader.read(0, 2, 9, 9, zlib.crc32(b'{"b": 2}\n')) == b'{"b": 2}\n'
        p.write_bytes(b'{"a": 1}\n{"b": 3}\n')
        with pytest.raises(InputChanged, match=r"r_rollouts.jsonl line 2 changed"):
            reader.read(0, 2, 9, 9, zlib.crc32(b'{"b": 2}\n'))


def test_a_line_rewritten_during_a_run_reaches_the_user_as_one_line_naming_it(tmp_path):
    """Raised in a worker, as a grouped run's build reads lines back: the user sees one
    line naming the file and line, and exit 2 (an input to fix), not Ray's wrapper of an
    unexpected error (exit 9)."""
    import zlib

    import ray

    from gymray.engine.read import LineReader
    from gymray.errors import EXIT_USAGE, classify
    from gymray.storage import expand_inputs

    p = tmp_path / "r_rollouts.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": 3}\n')  # rewritten since its crc was taken
    (f,) = expand_inputs([str(p)])

    @ray.remote
    def read_back():
        with LineReader([f], None) as reader:
            return reader.read(0, 2, 9, 9, zlib.crc32(b'{"b": 2}\n'))

    with pytest.raises(ray.exceptions.RayTaskError) as e:
        ray.get(read_back.remote())
    failure = classify(e.value)
    assert failure.exit_code == EXIT_USAGE, failure
    assert failure.message.startswith(f"{p} line 2 changed while gymray was reading it")


def test_dpo_on_the_real_repeat_fixtures_says_why_no_pair(tmp_path):
    """The fixtures' own repeats, unchanged: the aalcr tasks' rollouts all scored
    alike; blackjack's 5 rollouts of task 0 each start from another dealt hand
    (another prompt), so none can pair. Expectations are derived from the files."""
    aalcr = fixture("resources_servers/aalcr/data/example_rollouts.jsonl")
    blackjack = fixture("environments/blackjack/data/example_rollouts.jsonl")
    tasks: dict = {}
    for path in (aalcr, blackjack):
        for row in read_jsonl(path):
            key = (row["agent_ref"]["name"], row["_ng_task_index"])
            tasks.setdefault(key, []).append(row)
    tied = sum(len(rows) for rows in tasks.values() if len({r["reward"] for r in rows}) == 1)
    bj = tasks[("blackjack_gymnasium_agent", 0)]
    assert len({orjson.dumps(r["responses_create_params"]["input"]) for r in bj}) == len(bj) > 1
    res = gymray.prepare("dpo", input=[str(aalcr), str(blackjack)], output=str(tmp_path / "d"))
    assert res.counts["filtered"] == {"tied_rewards": tied, "prompt_differs_within_task": len(bj)}
    assert res.counts["input_lines"] == sum(len(rows) for rows in tasks.values())
    report = (tmp_path / "d" / "report.md").read_text()
    assert "Why no pairs" in report and "not their prompt" in report
    # the same rollouts under GRPO: one task row per task, pass rate from all its rollouts
    g = gymray.prepare("grpo", input=[str(aalcr), str(blackjack)], output=str(tmp_path / "g"),
                       **{"split.val_fraction": 0})  # fmt: skip
    rows = read_jsonl(tmp_path / "g" / "train.jsonl")
    assert len(rows) == len(tasks) == g.counts["records"]["train"]
    for r in rows:
        expected = tasks[(r["agent_ref"]["name"], r["meta"]["task_index"])]
        assert r["meta"]["rollouts"] == len(expected)
        assert r["meta"]["pass_rate"] == pytest.approx(
            sum(x["reward"] for x in expected) / len(expected)
        )


def test_dpo_on_generated_repeats_says_why_no_pair(tmp_path):
    """The generated twins of aalcr (every rollout of a task scored alike) and blackjack
    (task 0 dealt a new hand per rollout: another prompt, so no pair; the other tasks
    end every rollout on the same final action, and DPO scores the final message only,
    so differently scored rollouts still make no pair); expectations derived from the
    rows the generator wrote."""
    from gymray.samples.gym_shapes import gym_tree

    tree = gym_tree(tmp_path / "gym")
    rels = ["resources_servers/aalcr/data/example_rollouts.jsonl",
            "environments/blackjack/data/example_rollouts.jsonl"]  # fmt: skip
    tasks: dict = {}
    for rel in rels:
        for row in tree["rollouts"][rel]:
            tasks.setdefault((row["agent_ref"]["name"], row["_ng_task_index"]), []).append(row)
    prompts = lambda rows: {orjson.dumps(r["responses_create_params"]["input"]) for r in rows}  # noqa: E731
    final = lambda r: orjson.dumps(r["response"]["output"][-1]["content"])  # noqa: E731
    differs = [rows for rows in tasks.values() if len(prompts(rows)) > 1]
    same = [rows for rows in tasks.values() if len(prompts(rows)) == 1]
    tied = [rows for rows in same if len({r["reward"] for r in rows}) == 1]
    pairable = [rows for rows in same if any(a["reward"] != b["reward"] and final(a) != final(b)
                                             for a in rows for b in rows)]  # fmt: skip
    identical = [rows for rows in same if rows not in tied and rows not in pairable]
    assert differs and tied and identical
    inputs = [str(tmp_path / "gym" / r) for r in rels]
    res = gymray.prepare("dpo", input=inputs, output=str(tmp_path / "d"))
    made = res.counts["records"]["train"] + res.counts["records"]["val"]
    assert res.counts["filtered"]["prompt_differs_within_task"] == sum(map(len, differs))
    assert res.counts["filtered"]["tied_rewards"] == sum(map(len, tied))
    assert res.counts["filtered"].get("identical_completions", 0) == sum(map(len, identical))
    assert made == len(pairable)
    report = (tmp_path / "d" / "report.md").read_text()
    if not made:  # the hint names the main cause: here, identical final messages
        assert "identical completions" in report


def test_whole_rollouts_are_grouped_in_stretches_of_whole_tasks(mixed):
    """With whole rollouts shuffled, a range is grouped a stretch of tasks at a time;
    the rows and their order are those of grouping the range at once, and no task
    is cut between two stretches."""
    import pyarrow as pa

    from gymray.config import Settings
    from gymray.engine.blocks import GROUP_KEYS, SORT_ORDER, group_block, parse_rollouts
    from gymray.engine.grouped import grouped_stretches
    from gymray.engine.read import read_lines
    from gymray.storage import expand_inputs

    settings = Settings(algo="dpo", dpo={"pairing": "all", "min_gap": 0.1})
    inputs = expand_inputs([str(mixed)])
    spec = recipe_spec(settings, inputs)
    rollouts = pa.concat_tables(
        parse_rollouts(b, spec) for fid, f in enumerate(inputs) for b in read_lines(f, fid, 1 << 20)
    ).sort_by([(k, "ascending") for k in GROUP_KEYS])
    whole = group_block(rollouts, spec).sort_by(SORT_ORDER)
    stretches = list(grouped_stretches(rollouts, spec, rows=5))
    assert len(stretches) > 10
    tasks = [set(t.column("task_hash").to_pylist()) for t in stretches]
    assert sum(map(len, tasks)) == len(set().union(*tasks))  # no task in two stretches
    joined = pa.concat_tables(stretches)
    assert joined.to_pylist() == whole.to_pylist()
    assert sum(r is not None for r in joined.column("record").to_pylist()) > 5


def test_build_block_yields_the_same_rows_whatever_its_chunk_size(mixed):
    """build_block streams a sorted block in stretches of a few plans; the rows
    and their order do not depend on how many plans a stretch holds."""
    import pyarrow as pa

    from gymray.config import Settings
    from gymray.engine.blocks import SORT_KEYS, build_block, decide_block, summarize_lines
    from gymray.engine.read import read_lines
    from gymray.storage import expand_inputs

    settings = Settings(algo="dpo", dpo={"pairing": "all", "min_gap": 0.1})
    inputs = expand_inputs([str(mixed)])
    spec = recipe_spec(settings, inputs)
    keys = pa.concat_tables(
        summarize_lines(b, spec)
        for fid, f in enumerate(inputs)
        for b in read_lines(f, fid, 1 << 20)
    )
    decided = decide_block(keys, spec)
    decided = decided.sort_by([(k, "ascending") for k in SORT_KEYS])
    whole = list(build_block(decided, spec, inputs, 10**6))
    small = list(build_block(decided, spec, inputs, 3))
    assert len(whole) == 1 and len(small) > 5
    a, b = whole[0], pa.concat_tables(small)
    assert a.num_rows == b.num_rows == decided.num_rows
    assert a.column("record").to_pylist() == b.column("record").to_pylist()
    assert a.select(SORT_KEYS).to_pylist() == b.select(SORT_KEYS).to_pylist()
    assert b.select(SORT_KEYS).to_pylist() == decided.select(SORT_KEYS).to_pylist()
    assert sum(r is not None for r in b.column("record").to_pylist()) > 5


def test_a_per_rollout_block_is_ray_block_bytes_of_input_not_ray_datas_block(tmp_path):
    """Ray Data coalesces a map's small output blocks up to its own target (128 MiB)
    before the next map: the parsing and writing must still see ``ray.block_bytes``
    of lines at a time, or a worker's memory grows with Ray Data's target, not ours."""
    rows = [
        orjson.dumps(rollout([user(f"question {t}")], [message(f"answer {t} " + "x" * 400, "m")],
                             1.0, agent="a", task=t, rollout_index=0))
        for t in range(400)
    ]  # fmt: skip
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    size = (tmp_path / "in" / "a.jsonl").stat().st_size
    block = 16 << 10
    res = gymray.prepare("sft", input=str(tmp_path / "in"), output=str(tmp_path / "o"),
                         **{"ray.block_bytes": block, "sft.reward_threshold": 0,
                            "sft.dedup": False, "split.val_fraction": 0})  # fmt: skip
    parts = list((tmp_path / "o" / "parquet" / "train").glob("*.parquet"))
    assert res.counts["records"]["train"] > 0
    # a worker writes each block of lines it parses as a row group of its part
    groups = sum(pq.ParquetFile(p).num_row_groups for p in parts)
    assert groups >= size // block // 2  # (blocks end on lines)
    # ... and the blocks of one read unit (the file: under ray.split_bytes) are one part,
    # so the driver plans one part's stats per unit, not one per block
    assert len(parts) == 1


def test_a_whole_file_unit_is_written_as_parts_of_ray_split_bytes(tmp_path):
    """A .gz file is one read unit (it cannot be read as ranges): its blocks are still
    written as parts of about ``ray.split_bytes`` of input, so that the driver hears of
    each part (progress lines) before the whole file is done."""
    rows = [
        orjson.dumps(rollout([user(f"question {t}")], [message(f"answer {t} " + "x" * 400, "m")],
                             1.0, agent="a", task=t, rollout_index=0))
        for t in range(400)
    ]  # fmt: skip
    data = b"\n".join(rows) + b"\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl.gz").write_bytes(gzip.compress(data))
    split, block = 64 << 10, 16 << 10
    res = gymray.prepare("sft", input=str(tmp_path / "in"), output=str(tmp_path / "o"),
                         **{"ray.block_bytes": block, "ray.split_bytes": split,
                            "sft.reward_threshold": 0, "split.val_fraction": 0})  # fmt: skip
    assert res.counts["records"]["train"] == 400
    # a part ends with the block that brings it to split_bytes
    assert len(data) // (split + block) <= res.manifest["stats"]["parts"] <= len(data) // split + 1
    lines = (tmp_path / "o" / "train.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["messages"][-1]["content"] for x in lines] == [
        f"answer {t} " + "x" * 400 for t in range(400)
    ]


def test_a_unit_holds_one_block_of_outcomes_at_a_time():
    """While a unit's next block of lines is parsed, the block before it has been
    written and is freed: a worker holds one block's outcomes, not two (holding two
    put a map worker 55 MiB over its 300 MiB budget at 16 MiB blocks)."""
    made = []

    class Outcomes:  # what stream._outcomes yields: a block's rows, its input size
        input_bytes = 10

    def blocks():
        for n in range(7):
            held = [k for k, ref in enumerate(made) if ref() is not None]
            assert not held, f"block {held} still held while block {n} is made"
            out = Outcomes()
            made.append(weakref.ref(out))
            yield out
            del out

    parts, written = stream.Parts(blocks(), part_bytes=25), []
    while not parts.done:
        part = 0
        for out in parts.next_part():  # as write_block takes them: one at a time
            part += 1
            del out
        written.append(part)
    assert written == [3, 3, 1]


def test_workers_give_arrow_the_c_allocator_unless_the_environment_says_otherwise():
    def pool_after_in_worker(env: dict, call: str = "in_worker()") -> str:
        code = (
            "import pyarrow as pa\nfrom gymray.engine.write import in_worker\n"
            f"{call}\nprint(pa.default_memory_pool().backend_name)"
        )
        clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        run = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, cwd=REPO,
                             capture_output=True, text=True, check=True)  # fmt: skip
        return run.stdout.strip()

    default = pool_after_in_worker({}, call="pass")
    assert default != "system"  # pyarrow's own (mimalloc or jemalloc): what gymray replaces
    assert pool_after_in_worker({}) == "system"
    assert pool_after_in_worker({"ARROW_DEFAULT_MEMORY_POOL": default}) == default
