"""Storage on a real S3 server (SeaweedFS on loopback) and on local disk: globbing,
gzip, the commit protocol under SIGKILL, fingerprint reuse, overwrite, and the
local path NeMo RL gets for an object-store dataset.

The S3 server starts before the session's Ray when any test uses it (see
conftest), so that Ray's workers, which read and write the data, have its
credentials in their environment as a cluster's workers would.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from support import S3_BUCKET, generated, get, objects, put, uri

import gymray
from gymray.storage import (
    MANIFEST,
    WRITING_MARKER,
    Staging,
    StorageError,
    local_dataset_path,
    output_state,
    read_manifest,
)
from gymray.storage.commit import STALE_SECONDS

BUCKET = S3_BUCKET
BLACKJACK = "environments/blackjack/data/example_rollouts.jsonl"
CITATION = "resources_servers/citation_if/data/example_rollouts.jsonl"
# Keep every record (the rollouts' rewards are mostly below the default 0.95).
KEEP_ALL = ("sft.reward_threshold=null",)
SMALL_RAY = ("ray.num_cpus=2", f"ray.object_store_memory={256 * 1024**2}")


# --------------------------------------------------------------------------- fixtures
def cli_env(server: S3Server) -> dict:
    env = {**os.environ, **server.env()}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)  # its own local Ray, never the session's
    return env


def run_cli(server: S3Server, *args: str, cwd: Path, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "gymray.run", "sft", *args],
        env=cli_env(server),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


GARBAGE = b"this is not a rollout\n{also not\n"


@pytest.fixture(scope="module")
def rollouts_on_s3(s3):
    """NeMo Gym output as it lands in a bucket: rollouts (one gzipped), sidecars
    holding lines that would be rejects if gymray read them, and a non-rollout file."""
    blackjack = generated(BLACKJACK).read_bytes()
    citation = generated(CITATION).read_bytes()
    put(s3, "rollouts/blackjack.jsonl", blackjack)
    put(s3, "rollouts/sub/citation.jsonl.gz", gzip.compress(citation))
    put(s3, "rollouts/blackjack_failures.jsonl", GARBAGE)
    put(s3, "rollouts/sub/citation_materialized_inputs.jsonl", GARBAGE)
    put(s3, "rollouts/sub/citation_reward_profiling.jsonl", GARBAGE)
    put(s3, "rollouts/notes.txt", GARBAGE)
    return {"lines": blackjack.count(b"\n") + citation.count(b"\n")}


@pytest.fixture(scope="module")
def s3_dataset(s3, rollouts_on_s3, tmp_path_factory):
    """One CLI run s3:// -> s3:// and one s3:// -> local disk of the same inputs."""
    work = tmp_path_factory.mktemp("cli")
    pattern = uri("rollouts/**/*.jsonl*")
    runs = {}
    for name, output in (("s3", uri("datasets/sft-v1")), ("local", str(work / "sft-v1"))):
        p = run_cli(
            s3,
            f"input={pattern}",
            f"output={output}",
            *KEEP_ALL,
            *SMALL_RAY,
            "--prepare-only",
            "--json",
            cwd=work,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        runs[name] = p
    return {
        "pattern": pattern,
        "output": uri("datasets/sft-v1"),
        "local": work / "sft-v1",
        "work": work,
        "runs": runs,
        "lines": rollouts_on_s3["lines"],
    }


# --------------------------------------------------------------------------- globbing
def test_cli_round_trip_s3_to_s3_matches_local_output(s3, s3_dataset):
    manifest_raw = get(s3, "datasets/sft-v1/manifest.json")
    manifest = orjson.loads(manifest_raw)
    # The glob took the two rollout files, not the sidecars (their lines would be rejects).
    assert [i["uri"] for i in manifest["inputs"]] == [
        uri("rollouts/blackjack.jsonl"),
        uri("rollouts/sub/citation.jsonl.gz"),
    ]
    counts = manifest["counts"]
    assert counts["input_lines"] == s3_dataset["lines"] and counts["rejected"] == {}
    assert all(i["size"] > 0 and i["mtime_ns"] > 0 for i in manifest["inputs"])
    local = s3_dataset["local"]
    assert get(s3, "datasets/sft-v1/train.jsonl") == (local / "train.jsonl").read_bytes()
    assert counts["records"]["val"] >= 1
    assert get(s3, "datasets/sft-v1/val.jsonl") == (local / "val.jsonl").read_bytes()
    assert manifest["fingerprint"] == orjson.loads((local / MANIFEST).read_bytes())["fingerprint"]
    # Parquet written through Staging.open on S3 reads back with every train record.
    fs = s3.filesystem()
    rows = sum(
        pq.read_table(fs.open_input_file(f"{BUCKET}/datasets/sft-v1/{p}")).num_rows
        for p in manifest["files"]["parquet"]["train"]
    )
    assert rows == counts["records"]["train"]
    # Committed means: manifest present, writing marker gone.
    assert WRITING_MARKER not in objects(s3, "datasets/sft-v1")
    summary = json.loads(s3_dataset["runs"]["s3"].stdout)["dataset"]
    assert summary["output"] == uri("datasets/sft-v1") and summary["reused"] is False


def test_no_credentials_in_manifest_or_output(s3, s3_dataset):
    texts = [get(s3, "datasets/sft-v1/manifest.json"), get(s3, "datasets/sft-v1/report.md")]
    for p in s3_dataset["runs"].values():
        texts += [p.stdout.encode(), p.stderr.encode()]
    for t in texts:
        assert ACCESS_KEY.encode() not in t and SECRET_KEY.encode() not in t
    # ...but the endpoint setting a user gave is recorded as a plain setting
    settings = orjson.loads(texts[0])["settings"]["storage"]
    assert set(settings) >= {"endpoint_url", "region", "materialize_to"}


def test_rerun_reuses_and_other_settings_are_refused(s3, s3_dataset):
    before = objects(s3, "datasets/sft-v1")
    args = (f"input={s3_dataset['pattern']}", f"output={s3_dataset['output']}", *KEEP_ALL)
    again = run_cli(s3, *args, "--prepare-only", cwd=s3_dataset["work"])
    assert again.returncode == 0, again.stderr
    assert f"reused {s3_dataset['output']}" in again.stderr
    # The API says the same, without starting Ray or writing anything.
    res = gymray.prepare(
        "sft",
        input=s3_dataset["pattern"],
        output=s3_dataset["output"],
        sft={"reward_threshold": None},
    )
    assert (
        res.reused
        and res.fingerprint == orjson.loads(get(s3, "datasets/sft-v1/manifest.json"))["fingerprint"]
    )
    other = run_cli(s3, *args, "split.val_fraction=0.5", "--prepare-only", cwd=s3_dataset["work"])
    assert other.returncode == 2, other.stderr
    assert s3_dataset["output"] in other.stderr and "overwrite=true" in other.stderr
    assert "Traceback" not in other.stderr
    assert objects(s3, "datasets/sft-v1") == before  # same objects, same mtimes


def test_overwrite_replaces_a_dataset_on_s3(s3, ray_session, tmp_path):
    src = tmp_path / "in" / "blackjack.jsonl"
    src.parent.mkdir()
    src.write_bytes(generated(BLACKJACK).read_bytes())
    out = uri("datasets/overwrite")
    first = gymray.prepare("sft", input=str(src), output=out, sft={"reward_threshold": None})
    old = objects(s3, "datasets/overwrite")
    with pytest.raises(StorageError, match="overwrite=true"):
        gymray.prepare("sft", input=str(src), output=out, split={"val_fraction": 0.5})
    assert objects(s3, "datasets/overwrite") == old
    second = gymray.prepare(
        "sft", input=str(src), output=out, split={"val_fraction": 0.5}, overwrite=True
    )
    assert not second.reused and second.fingerprint != first.fingerprint
    manifest = read_manifest(out)
    assert manifest["fingerprint"] == second.fingerprint
    assert manifest["settings"]["split"]["val_fraction"] == 0.5
    assert WRITING_MARKER not in objects(s3, "datasets/overwrite")


def test_overwrite_unpublishes_the_old_manifest_first(s3):
    out = uri("datasets/unpublish")
    st = Staging(out)
    with st.open("train.jsonl") as f:
        f.write(b"{}\n")
    st.commit({"fingerprint": "old"})
    assert output_state(out) == "dataset"
    st = Staging(out, overwrite=True)
    # Before a single new byte is written, readers see no dataset, and nothing old.
    assert read_manifest(out) is None and output_state(out) == "unfinished"
    assert set(objects(s3, "datasets/unpublish")) == {WRITING_MARKER}
    st.abort()
    assert objects(s3, "datasets/unpublish") == {} and output_state(out) == "absent"


FAIL_MID_WRITE = """
import sys
import pyarrow as pa, pyarrow.parquet as pq
from gymray.storage import Staging
st = Staging(sys.argv[1])
jsonl = st.open("train.jsonl")
jsonl.write(b"{}\\n")
pw = pq.ParquetWriter(st.open("parquet/train/part-00000.parquet"), pa.schema([("a", pa.int64())]))
pw.write_table(pa.table({"a": [1]}))
try:
    raise RuntimeError("the pipeline failed")
except BaseException:
    st.abort()
    raise
"""


def test_a_failed_write_to_s3_exits_and_leaves_nothing(s3, tmp_path):
    """The exception keeps the writer's S3 streams alive until interpreter exit,
    where an open one hangs pyarrow's S3 finalizer: abort must close them."""
    out = uri("datasets/failed")
    p = subprocess.run(
        [sys.executable, "-c", FAIL_MID_WRITE, out],
        env=cli_env(s3),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1 and "the pipeline failed" in p.stderr
    assert objects(s3, "datasets/failed") == {} and output_state(out) == "absent"


def test_foreign_prefixes_and_bucket_roots_are_not_written(s3, tmp_path):
    put(s3, "precious/data.bin", b"keep me")
    src = str(generated(BLACKJACK))
    with pytest.raises(StorageError, match="not a gymray dataset"):
        gymray.prepare("sft", input=src, output=uri("precious"))
    with pytest.raises(StorageError, match="not a gymray dataset"):
        Staging(uri("precious"))
    assert get(s3, "precious/data.bin") == b"keep me"
    with pytest.raises(StorageError, match="whole bucket"):
        Staging(f"s3://{BUCKET}/", overwrite=True)


def test_leftovers_of_a_crashed_write_are_cleaned_by_the_next_run(s3, ray_session, tmp_path):
    out = uri("datasets/crashed")
    st = Staging(out)
    for rel in ("train.jsonl", "parquet/train/part-00007.parquet"):
        with st.open(rel) as f:
            f.write(b"half a dataset")
    del st  # the process "dies" here: no commit, no abort
    assert read_manifest(out) is None and output_state(out) == "unfinished"
    with pytest.raises(StorageError, match="no committed gymray dataset"):
        local_dataset_path(out, str(tmp_path / "m"))
    res = gymray.prepare(
        "sft", input=str(generated(BLACKJACK)), output=out, **{"sft.reward_threshold": None}
    )
    assert not res.reused
    left = set(objects(s3, "datasets/crashed"))
    assert "parquet/train/part-00007.parquet" not in left and WRITING_MARKER not in left
    assert get(s3, "datasets/crashed/train.jsonl") != b"half a dataset"


def test_a_live_writer_on_this_host_is_not_clobbered(s3):
    out = uri("datasets/busy")
    put(
        s3,
        f"datasets/busy/{WRITING_MARKER}",
        orjson.dumps({"host": socket.gethostname(), "pid": os.getppid()}),
    )
    with pytest.raises(StorageError, match=f"pid {os.getppid()}"):
        Staging(out)


# --------------------------------------------------------------------------- settings
def test_remote_dataset_needs_materialize_to_for_nemo_rl(s3, s3_dataset, tmp_path):
    out = s3_dataset["output"]
    with pytest.raises(StorageError, match="storage.materialize_to"):
        local_dataset_path(out, None)
    with pytest.raises(StorageError, match="not an object store"):
        local_dataset_path(out, uri("cache"))
    path = local_dataset_path(out, str(tmp_path / "cache"))
    manifest = orjson.loads(get(s3, "datasets/sft-v1/manifest.json"))
    assert Path(path).parent == tmp_path / "cache"
    assert Path(path).name == f"sft-v1-{manifest['fingerprint'][:12]}"
    assert (Path(path) / "train.jsonl").read_bytes() == get(s3, "datasets/sft-v1/train.jsonl")
    assert (Path(path) / "val.jsonl").read_bytes() == get(s3, "datasets/sft-v1/val.jsonl")
    local_manifest = read_manifest(path)
    assert local_manifest["output"] == path and local_manifest["materialized_from"] == out
    mtime = (Path(path) / "train.jsonl").stat().st_mtime_ns
    assert local_dataset_path(out, str(tmp_path / "cache")) == path  # reused, not copied again
    assert (Path(path) / "train.jsonl").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(path).name]  # no temp left
    # A local dataset is handed over as is.
    assert local_dataset_path(str(s3_dataset["local"]), None) == str(s3_dataset["local"])


# --------------------------------------------------------------------------- SIGKILL mid-write
@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """~30 MB of distinct-enough rollouts: a couple of seconds of writing."""
    lines = [x for x in generated(CITATION).read_bytes().split(b"\n") if x]
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "wb") as f:
        while f.tell() < 30 << 20:
            f.write(b"\n".join(lines) + b"\n")
    return path


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"prepare finished (rc {proc.returncode}) before the kill:\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail("prepare never started writing")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_sigkill_mid_write_leaves_no_dataset_and_rerun_cleans_up(
    s3, ray_session, big_input, tmp_path, backend
):
    if backend == "s3":
        out = uri(f"datasets/killed-{tmp_path.name}")
        prefix = out.split(f"{BUCKET}/", 1)[1]
    else:
        out = str(tmp_path / "out" / "sft-killed")
    args = [f"input={big_input}", f"output={out}", *KEEP_ALL, "sft.dedup=false"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymray.run", "sft", *args, *SMALL_RAY, "--prepare-only"],
        env=cli_env(s3),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: its Ray goes down with it
    )
    try:
        if backend == "s3":
            # The marker is written before the data streams open: from here on the
            # driver is writing the dataset.
            _wait_for(lambda: WRITING_MARKER in objects(s3, prefix), proc)
        else:
            parent = tmp_path / "out"

            def staging_dir():
                tmp = (
                    [p for p in parent.glob(".sft-killed.gymray-tmp-*")] if parent.exists() else []
                )
                return tmp if tmp and (tmp[0] / "train.jsonl").exists() else None

            _wait_for(staging_dir, proc)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the killed driver's own Ray processes
        except ProcessLookupError:
            pass
        proc.communicate()

    # Nothing that looks like a dataset, to gymray or to anyone listing the output.
    assert read_manifest(out) is None
    if backend == "s3":
        assert MANIFEST not in objects(s3, prefix)
        assert output_state(out) == "unfinished"
    else:
        assert not Path(out).exists()
        (tmp,) = (tmp_path / "out").glob(".sft-killed.gymray-tmp-*")
        assert f"-{proc.pid}-" in tmp.name

    res = gymray.prepare(
        "sft",
        input=str(big_input),
        output=out,
        **{"sft.reward_threshold": None, "sft.dedup": False, "ray.block_bytes": 8 << 20},
    )
    assert not res.reused
    manifest = read_manifest(out)
    assert manifest["fingerprint"] == res.fingerprint
    assert manifest["counts"]["input_lines"] == big_input.read_bytes().count(b"\n")
    if backend == "s3":
        assert WRITING_MARKER not in objects(s3, prefix)
    else:
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sft-killed"]


# --------------------------------------------------------------------------- local temp dirs
def test_stale_local_temp_dirs_are_removed_and_live_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    names = {
        "dead": f".ds.gymray-tmp-{host}-{dead_pid}-aaaaaaaa",
        "live": f".ds.gymray-tmp-{host}-{os.getpid()}-bbbbbbbb",
        "other_recent": ".ds.gymray-tmp-elsewhere-1-cccccccc",
        "other_old": ".ds.gymray-tmp-elsewhere-2-dddddddd",
        "old_copy": ".ds.gymray-old-eeeeeeee",
        "unrelated": ".dsx.gymray-tmp-elsewhere-3-ffffffff",
    }
    for n in names.values():
        (tmp_path / n).mkdir()
        (tmp_path / n / "train.jsonl").write_bytes(b"x")
    old = time.time() - 2 * STALE_SECONDS
    for p in (tmp_path / names["other_old"], tmp_path / names["other_old"] / "train.jsonl"):
        os.utime(p, (old, old))
    st = Staging(str(tmp_path / "ds"))
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {
        names["live"],
        names["other_recent"],
        names["unrelated"],
        os.path.basename(st.path),
    }
    st.abort()
    assert os.path.basename(st.path) not in {p.name for p in tmp_path.iterdir()}


def test_an_unreadable_manifest_is_never_reused_nor_silently_replaced(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / MANIFEST).write_bytes(b'{"fingerprint": "trunc')  # a torn write by some other tool
    src = str(generated(BLACKJACK))
    with pytest.raises(StorageError, match=f"holds a {MANIFEST} gymray cannot read"):
        gymray.prepare("sft", input=src, output=str(out))
    with pytest.raises(StorageError, match="no committed gymray dataset"):
        local_dataset_path(str(out), None)
    assert (out / MANIFEST).read_bytes() == b'{"fingerprint": "trunc'


def test_grouped_recipe_from_s3_shuffles_keys_with_scratch_copies(s3, tmp_path):
    """Object-store inputs (one of them gzipped) are copied to ray.scratch so that
    DPO shuffles keys and reads lines back by offset: same dataset as shuffling
    whole rollouts straight from S3, records naming the s3:// files. (CLI runs:
    Ray workers read S3 with the credentials in their own environment.)"""
    from gymray.samples.gym_shapes import repeats_tree

    repeats = repeats_tree(tmp_path / "rollouts")
    for i, p in enumerate(sorted(repeats.iterdir())):
        data = p.read_bytes()
        if i == 0:
            put(s3, f"grouped/{p.name}.gz", gzip.compress(data))
        else:
            put(s3, f"grouped/{p.name}", data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    manifests = {}
    for mode, extra in (("keys", [f"ray.scratch={scratch}"]), ("rollouts", [])):
        out = tmp_path / f"out-{mode}"
        p = subprocess.run(
            [sys.executable, "-m", "gymray.run", "dpo", f"input={uri('grouped/')}",
             f"output={out}", *SMALL_RAY, *extra, "--prepare-only"],
            env=cli_env(s3), cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-2000:]
        manifests[mode] = json.loads((out / MANIFEST).read_text())
        assert manifests[mode]["stats"]["shuffle"] == mode
    assert list(scratch.iterdir()) == []
    assert manifests["keys"]["counts"] == manifests["rollouts"]["counts"]
    assert sum(manifests["keys"]["counts"]["records"].values()) == 24
    for name in ("train.jsonl", "val.jsonl", "filtered.jsonl"):
        keyed = (tmp_path / "out-keys" / name).read_bytes()
        assert keyed == (tmp_path / "out-rollouts" / name).read_bytes(), name
    first = json.loads((tmp_path / "out-keys" / "train.jsonl").read_bytes().split(b"\n")[0])
    assert all(s["file"].startswith("s3://") for s in first["meta"]["source"])
    # Forced keys on plain objects without scratch: lines read back with ranged reads.
    plain = uri("grouped/part-[12].jsonl")
    for mode in ("keys", "rollouts"):
        out = tmp_path / f"plain-{mode}"
        p = subprocess.run(
            [sys.executable, "-m", "gymray.run", "dpo", f"input={plain}", f"output={out}",
             *SMALL_RAY, f"ray.shuffle={mode}", "--prepare-only"],
            env=cli_env(s3), cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-2000:]
        assert json.loads((out / MANIFEST).read_text())["stats"]["shuffle"] == mode
    for name in ("train.jsonl", "val.jsonl", "filtered.jsonl"):
        keyed = (tmp_path / "plain-keys" / name).read_bytes()
        assert keyed == (tmp_path / "plain-rollouts" / name).read_bytes(), name
    assert (tmp_path / "plain-keys" / "train.jsonl").read_bytes()
