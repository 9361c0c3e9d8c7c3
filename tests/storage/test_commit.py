"""Publishing a dataset (gymray/storage/commit.py) on real files, a real S3 server
(SeaweedFS) and real small file systems (tmpfs, mounted when allowed).

- ``overwrite=true`` replaces a gymray dataset and nothing else: not a directory
  of someone's files, not a home directory, not the directory a run starts in,
  and never the rollouts a dataset is made from;
- two runs into one output never silently replace each other, locally (the
  rename only lands where nothing is) or on S3 (a marker with an owner token);
- a full disk, wherever it is met (workers, Ray tasks, driver), is one line
  naming the output and the file, exit 8, and nothing is left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pyarrow.fs as pafs
import pytest
from support import S3_BUCKET, fixture

import gymray
from gymray.errors import EXIT_IO, EXIT_USAGE, StorageIOError
from gymray.storage import (
    MANIFEST,
    WRITING_MARKER,
    Staging,
    StorageError,
    lock,
    read_manifest,
    refuse_unless_replaceable,
)

BLACKJACK = "environments/blackjack/data/example_rollouts.jsonl"
KEEP_ALL = {"sft.reward_threshold": None}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to show nothing changed."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def rollouts(tmp_path) -> Path:
    src = tmp_path / "rollouts" / "blackjack.jsonl"
    src.parent.mkdir()
    src.write_bytes(fixture(BLACKJACK).read_bytes())
    return src


def refused(match: str, **settings) -> StorageError:
    with pytest.raises(StorageError, match=match) as e:
        gymray.prepare("sft", **KEEP_ALL, **settings)
    assert e.value.exit_code == EXIT_USAGE
    assert "\n" not in str(e.value)
    return e.value


# --------------------------------------------------------------------------- item 1: overwrite
@pytest.mark.usefixtures("ray_session")
def test_overwrite_never_replaces_a_directory_of_user_files(rollouts, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("a week of work")
    (out / "sub" / "data.csv").write_text("1,2,3")
    before = tree(out)
    err = refused("not a gymray dataset", input=str(rollouts), output=str(out), overwrite=True)
    assert str(out) in str(err) and "notes.txt" in str(err)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "rollouts"]  # no temp left


@pytest.mark.usefixtures("ray_session")
def test_overwrite_never_replaces_a_home_directory(rollouts, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (home / ".bashrc").write_text("export PATH\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    before = tree(home)
    refused("not a gymray dataset", input=str(rollouts), output="~", overwrite=True)
    assert tree(home) == before
    # "~" is the home directory wherever it is checked or written, never a dir named "~".
    res = gymray.prepare("sft", input=str(rollouts), output="~/ds", **KEEP_ALL)
    assert res.output == str(home / "ds") and (home / "ds" / MANIFEST).is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.usefixtures("ray_session")
def test_overwrite_never_replaces_the_current_directory(rollouts, tmp_path, monkeypatch):
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(cwd)
    refused("not a gymray dataset", input=str(rollouts), output=".", overwrite=True)
    assert tree(cwd) == {"train.py": b"print('hi')\n"}
    # With the rollouts in it, it contains an input: refused before anything else.
    local = cwd / "rollouts.jsonl"
    local.write_bytes(rollouts.read_bytes())
    refused("contains the input", input=str(local), output=".", overwrite=True)
    assert local.read_bytes() == rollouts.read_bytes()


@pytest.mark.usefixtures("ray_session")
def test_overwrite_never_replaces_a_file_system_root(rollouts):
    refused("output / contains the input", input=str(rollouts), output="/", overwrite=True)
    with pytest.raises(StorageError, match="/ is not a gymray dataset"):
        refuse_unless_replaceable("/", overwrite=True)


@pytest.mark.usefixtures("ray_session")
def test_output_equal_to_or_containing_an_input_is_refused(rollouts, tmp_path):
    data = rollouts.read_bytes()
    for output in (rollouts, rollouts.parent, tmp_path):
        for overwrite in (False, True):
            refused(
                f"output {output} (is|contains) the input",
                input=str(rollouts),
                output=str(output),
                overwrite=overwrite,
            )
    # Through a symlink, too: real paths are compared.
    link = tmp_path / "link"
    link.symlink_to(rollouts.parent)
    refused("contains the input", input=str(rollouts), output=str(link), overwrite=True)
    assert rollouts.read_bytes() == data


@pytest.mark.usefixtures("ray_session")
def test_output_containing_a_tasks_file_is_refused(rollouts, tmp_path):
    tasks = tmp_path / "tasks" / "tasks.jsonl"
    tasks.parent.mkdir()
    tasks.write_bytes(fixture("environments/blackjack/data/example.jsonl").read_bytes())
    with pytest.raises(StorageError, match="contains the tasks file") as e:
        gymray.prepare(
            "grpo", input=str(rollouts), tasks=str(tasks), output=str(tasks.parent), overwrite=True
        )
    assert e.value.exit_code == EXIT_USAGE
    assert tasks.exists()


@pytest.mark.usefixtures("ray_session")
def test_overwrite_replaces_a_gymray_dataset_but_not_an_unreadable_manifest(rollouts, tmp_path):
    out = tmp_path / "ds"
    first = gymray.prepare("sft", input=str(rollouts), output=str(out), **KEEP_ALL)
    second = gymray.prepare(
        "sft", input=str(rollouts), output=str(out), overwrite=True, **{"split.val_fraction": 0.5}
    )
    assert second.fingerprint != first.fingerprint and not second.reused
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / MANIFEST).write_bytes(b'{"name": "my web app"}')
    refused(f"{MANIFEST}", input=str(rollouts), output=str(torn), overwrite=True)
    assert tree(torn) == {MANIFEST: b'{"name": "my web app"}'}


# --------------------------------------------------------------------------- item 1 on S3
def _put(s3, key: str, data: bytes) -> None:
    with s3.filesystem().open_output_stream(f"{S3_BUCKET}/{key}") as f:
        f.write(data)


def _keys(s3, prefix: str) -> dict[str, bytes]:
    fs = s3.filesystem()
    base = f"{S3_BUCKET}/{prefix}"
    out = {}
    for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if i.type == pafs.FileType.File:
            with fs.open_input_stream(i.path) as f:
                out[i.path[len(base) + 1 :]] = f.read()
    return out


@pytest.mark.usefixtures("ray_session")
def test_overwrite_never_clears_a_foreign_prefix_or_its_inputs_on_s3(s3):
    data = fixture(BLACKJACK).read_bytes()
    _put(s3, "mixed/rollouts/a.jsonl", data)
    _put(s3, "mixed/notes.txt", b"keep me")
    before = _keys(s3, "mixed")
    src = f"s3://{S3_BUCKET}/mixed/rollouts/a.jsonl"
    for output in ("mixed", "mixed/rollouts", "mixed/rollouts/a.jsonl"):
        refused(
            "(is|contains) the input",
            input=src,
            output=f"s3://{S3_BUCKET}/{output}",
            overwrite=True,
        )
    # Another spelling of the same bucket (s3a://) is the same place.
    refused("contains the input", input=src, output=f"s3a://{S3_BUCKET}/mixed", overwrite=True)
    local = fixture(BLACKJACK)
    refused(
        "not a gymray dataset", input=str(local), output=f"s3://{S3_BUCKET}/mixed", overwrite=True
    )
    assert _keys(s3, "mixed") == before


def test_messages_name_what_is_there(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match=r"is a file"):
        refuse_unless_replaceable(str(tmp_path / "f"), overwrite=True)
    for i in range(8):
        (tmp_path / "d" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "d" / f"{i}.txt").write_text("x")
    with pytest.raises(StorageError, match=r"8 entries: 0\.txt, 1\.txt, 2\.txt, \.\.\."):
        refuse_unless_replaceable(str(tmp_path / "d"), overwrite=True)
    assert os.listdir(tmp_path / "d")


# --------------------------------------------------------------------------- item 5: two writers
def _staged(out: Path | str, body: bytes, overwrite: bool = False, **kw) -> Staging:
    st = Staging(str(out), overwrite=overwrite, **kw)
    with st.open("train.jsonl") as f:
        f.write(body)
    return st


def _race(stagings: list[Staging], manifests: list[dict]) -> list:
    """Commit all at once (threads released together): each result is the manifest
    the commit returned, or the exception it raised."""
    gate = threading.Barrier(len(stagings))
    results: list = [None] * len(stagings)

    def go(i: int) -> None:
        gate.wait()
        try:
            results[i] = stagings[i].commit(manifests[i])
        except Exception as e:  # noqa: BLE001 - the result under test
            results[i] = e
            stagings[i].abort()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(stagings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_local_commit_never_replaces_a_dataset_another_run_published(tmp_path):
    out = tmp_path / "ds"
    bodies = [f"run {i}\n".encode() for i in range(8)]
    stagings = [_staged(out, b) for b in bodies]
    results = _race(stagings, [{"fingerprint": f"fp{i}"} for i in range(8)])
    won = [i for i, r in enumerate(results) if isinstance(r, dict)]
    assert len(won) == 1, results
    (w,) = won
    for i, r in enumerate(results):
        if i != w:
            assert isinstance(r, StorageError) and r.exit_code == EXIT_USAGE
            assert str(r) == (
                f"another gymray run wrote {out} meanwhile (fingerprint fp{w}): set "
                "overwrite=true to replace it, or choose another output"
            )
    assert read_manifest(str(out))["fingerprint"] == f"fp{w}"
    assert (out / "train.jsonl").read_bytes() == bodies[w]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp dirs left


def test_local_commit_of_an_identical_dataset_reuses_it(tmp_path):
    out = tmp_path / "ds"
    first, second = _staged(out, b"same\n"), _staged(out, b"same\n")
    assert first.commit({"fingerprint": "fp", "n": 1}) == {"fingerprint": "fp", "n": 1}
    published = second.commit({"fingerprint": "fp", "n": 2})
    assert published == {"fingerprint": "fp", "n": 1} and second.reused == published
    assert first.reused is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_concurrent_local_overwrites_leave_one_whole_dataset(tmp_path):
    out = tmp_path / "ds"
    _staged(out, b"old\n").commit({"fingerprint": "old"})
    bodies = [f"run {i}\n".encode() * (i + 1) for i in range(8)]
    stagings = [_staged(out, b, overwrite=True) for b in bodies]
    results = _race(stagings, [{"fingerprint": f"fp{i}"} for i in range(8)])
    assert all(isinstance(r, dict) for r in results), results
    fp = read_manifest(str(out))["fingerprint"]
    assert (out / "train.jsonl").read_bytes() == bodies[int(fp[2:])]  # never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


SMALL_RAY = ("ray.num_cpus=1", f"ray.object_store_memory={128 * 1024**2}")


def _cli_env(extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)  # each run starts its own Ray, as two users' runs would
    return env


def _two_prepares(src: Path, out: str, settings: list[list[str]], cwd: Path, env: dict):
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gymray.run",
                "sft",
                f"input={src}",
                f"output={out}",
                "sft.reward_threshold=null",
                *extra,
                *SMALL_RAY,
                "--prepare-only",
                "--json",
            ],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for extra in settings
    ]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        done.append((p.returncode, stdout, stderr))
    return done


def _check_race(done, out: str) -> tuple[dict, dict]:
    """Exactly one run published; the other failed with one clear line (exit 2) or
    reused the identical dataset; the published dataset is the winner's. Returns the
    winner's summary and the manifest at the output."""
    ok = [orjson.loads(stdout)["dataset"] for rc, stdout, _ in done if rc == 0]
    failed = [stderr for rc, _, stderr in done if rc != 0]
    assert [rc for rc, _, _ in done].count(0) + len(failed) == 2
    for rc, _, stderr in done:
        assert rc in (0, EXIT_USAGE), stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    for stderr in failed:
        errors = [x for x in stderr.splitlines() if x.startswith("gymray: error:")]
        assert len(errors) == 1 and out in errors[0], stderr[-3000:]
        # the lock's documented outcomes: the rival published meanwhile, is writing, put its
        # marker at the same moment (this run backs off), or wrote other settings
        assert re.search(
            r"meanwhile|is writing|at the same moment|other inputs or settings", errors[0]
        ), errors
    writers = [s for s in ok if not s["reused"]]
    assert len(writers) == 1, [(rc, stderr[-2000:]) for rc, _, stderr in done]
    manifest = read_manifest(out)
    assert manifest["fingerprint"] == writers[0]["fingerprint"]
    for s in ok:
        assert s["fingerprint"] == writers[0]["fingerprint"]
    return writers[0], manifest


@pytest.mark.parametrize("same", [False, True], ids=["other_settings", "same_settings"])
def test_two_concurrent_local_prepares_into_one_output(rollouts, tmp_path, same):
    out = tmp_path / "out" / "ds"
    extras = [["split.val_fraction=0.2"], ["split.val_fraction=0.2" if same else "split.seed=7"]]
    done = _two_prepares(rollouts, str(out), extras, tmp_path, _cli_env())
    winner, _ = _check_race(done, str(out))
    assert (
        len((out / "train.jsonl").read_bytes().splitlines()) == winner["counts"]["records"]["train"]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ds"]


# --------------------------------------------------------------------------- item 5 on S3
def _marker(s3, prefix: str) -> dict | None:
    raw = _keys(s3, prefix).get(WRITING_MARKER)
    return orjson.loads(raw) if raw is not None else None


def test_a_second_writer_is_refused_while_the_first_writes_on_s3(s3):
    out = f"s3://{S3_BUCKET}/race/busy"
    first = _staged(out, b"A\n", fingerprint="a")
    with pytest.raises(StorageError, match=f"another gymray run .* is writing {out} now"):
        Staging(out, fingerprint="b")
    with pytest.raises(StorageError, match=f"another gymray run .* is writing {out} now"):
        Staging(out, overwrite=True)  # overwrite=true does not cut into a live write
    assert first.commit({"fingerprint": "a"}) == {"fingerprint": "a"}
    with pytest.raises(StorageError, match=rf"another gymray run wrote {out} meanwhile"):
        Staging(out, fingerprint="b")
    again = Staging(out, fingerprint="a")
    assert again.reused == {"fingerprint": "a"}  # an identical dataset: kept as it is
    assert _keys(s3, "race/busy") == {
        "train.jsonl": b"A\n",
        MANIFEST: b'{\n  "fingerprint": "a"\n}\n',
    }


def test_a_writer_on_another_host_is_respected_until_its_heartbeat_stops(s3):
    out = f"s3://{S3_BUCKET}/race/elsewhere"
    other = {"host": "node-7", "pid": 4242, "token": "t-other", "started": "earlier"}
    _put(s3, f"race/elsewhere/{WRITING_MARKER}", orjson.dumps({**other, "heartbeat": time.time()}))
    _put(s3, "race/elsewhere/train.jsonl", b"theirs\n")
    with pytest.raises(StorageError, match=r"another gymray run \(host node-7, pid 4242"):
        Staging(out, overwrite=True)
    assert _keys(s3, "race/elsewhere")["train.jsonl"] == b"theirs\n"
    # A crashed writer stops its heartbeat: after STALE_MARKER_SECONDS its leftovers go.
    old = time.time() - 2 * lock.STALE_MARKER_SECONDS
    _put(s3, f"race/elsewhere/{WRITING_MARKER}", orjson.dumps({**other, "heartbeat": old}))
    st = Staging(out)
    assert set(_keys(s3, "race/elsewhere")) == {WRITING_MARKER}
    assert _marker(s3, "race/elsewhere")["token"] == st.lock.token
    st.abort()
    assert _keys(s3, "race/elsewhere") == {}


def test_the_heartbeat_keeps_a_long_write_alive(s3, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.2)
    out = f"s3://{S3_BUCKET}/race/heartbeat"
    st = Staging(out)
    first = _marker(s3, "race/heartbeat")["heartbeat"]
    time.sleep(1.0)
    assert _marker(s3, "race/heartbeat")["heartbeat"] > first
    st.abort()
    assert _keys(s3, "race/heartbeat") == {}


def test_a_writer_that_lost_its_marker_publishes_nothing_and_deletes_nothing(s3):
    out = f"s3://{S3_BUCKET}/race/lost"
    st = _staged(out, b"mine\n")
    theirs = {"host": "node-7", "pid": 1, "token": "t-other", "heartbeat": time.time()}
    _put(s3, f"race/lost/{WRITING_MARKER}", orjson.dumps(theirs))  # another run took over
    with pytest.raises(StorageError, match=f"another gymray run .*node-7.* took over {out}"):
        st.commit({"fingerprint": "mine"})
    st.abort()
    left = _keys(s3, "race/lost")
    assert MANIFEST not in left and orjson.loads(left[WRITING_MARKER]) == theirs


def test_two_writers_starting_together_on_s3_one_backs_off(s3):
    """No conditional put in pyarrow's S3 client: each writer writes its marker,
    waits SETTLE_SECONDS and reads it back; the one whose marker was replaced backs off."""
    out = f"s3://{S3_BUCKET}/race/together"
    theirs = {"host": "node-7", "pid": 1, "token": "t-other", "heartbeat": time.time()}
    stop = threading.Event()

    def rival() -> None:  # writes its own marker right after ours, as a racing run would
        while not stop.is_set():
            m = _marker(s3, "race/together")
            if m is not None and m.get("token") != "t-other":
                _put(s3, f"race/together/{WRITING_MARKER}", orjson.dumps(theirs))
                return
            time.sleep(0.01)

    t = threading.Thread(target=rival)
    t.start()
    try:
        with pytest.raises(StorageError, match=f"started writing {out} at the same moment"):
            Staging(out)
    finally:
        stop.set()
        t.join()
    assert _keys(s3, "race/together") == {WRITING_MARKER: orjson.dumps(theirs)}


@pytest.mark.parametrize("same", [False, True], ids=["other_settings", "same_settings"])
def test_two_concurrent_prepares_into_one_s3_output(s3, rollouts, tmp_path, same):
    out = f"s3://{S3_BUCKET}/race/cli-{'same' if same else 'other'}"
    extras = [["split.val_fraction=0.2"], ["split.val_fraction=0.2" if same else "split.seed=7"]]
    done = _two_prepares(rollouts, out, extras, tmp_path, _cli_env(s3.env()))
    winner, manifest = _check_race(done, out)
    keys = _keys(s3, out.split(f"{S3_BUCKET}/", 1)[1])
    assert WRITING_MARKER not in keys
    assert len(keys["train.jsonl"].splitlines()) == winner["counts"]["records"]["train"]
    listed = {f for fs in manifest["files"]["parquet"].values() for f in fs}
    assert {k for k in keys if k.startswith("parquet/")} == listed


# --------------------------------------------------------------------------- item 6: disk full
@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(kib, ",ro")``: a real file system of that size (tmpfs) to fill up. Needs
    the right to mount (root, or CAP_SYS_ADMIN); skipped without it."""
    mounts: list[Path] = []

    def make(kib: int, options: str = "") -> Path:
        mnt = tmp_path / f"fs-{len(mounts)}"
        mnt.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small file system to fill up")
        p = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k{options}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            pytest.skip(
                f"cannot mount a {kib} KiB tmpfs to fill up (needs root or CAP_SYS_ADMIN): "
                f"{p.stderr.strip()}"
            )
        mounts.append(mnt)
        return mnt

    yield make
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


@pytest.fixture
def big_rollouts(tmp_path) -> Path:
    """~3 MB of rollouts: copies of the same conversations (run with sft.dedup=false,
    so that nothing is dropped as a duplicate)."""
    lines = [x for x in fixture(BLACKJACK).read_bytes().split(b"\n") if x]
    path = tmp_path / "big" / "rollouts.jsonl"
    path.parent.mkdir()
    with open(path, "wb") as f:
        i = 0
        while f.tell() < 3 << 20:
            row = orjson.loads(lines[i % len(lines)])
            row["_copy"] = i
            f.write(orjson.dumps(row) + b"\n")
            i += 1
    return path


NO_SPACE = r"no space left on device writing {out} \({file}\): free space or choose another output"


def test_disk_full_in_the_workers_is_one_line_and_exit_8(small_fs, big_rollouts, tmp_path):
    mnt = small_fs(1024)
    out = mnt / "ds"
    p = subprocess.run(
        [sys.executable, "-m", "gymray.run", "sft", f"input={big_rollouts}", f"output={out}",
         "sft.reward_threshold=null", "sft.dedup=false", *SMALL_RAY, "--prepare-only"],
        env=_cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == EXIT_IO, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [x for x in p.stderr.splitlines() if x.startswith("gymray: error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert re.fullmatch(
        "gymray: error: " + NO_SPACE.format(out=re.escape(str(out)), file=r"(_parts|parquet)/.+"),
        errors[0],
    ), errors[0]
    assert os.listdir(mnt) == []  # the staging directory is gone


@pytest.mark.usefixtures("ray_session")
def test_disk_full_while_assembling_in_ray_tasks(small_fs, big_rollouts, tmp_path):
    """Room for the workers' parts but not for the assembled files: the copy tasks
    fail, and their error reaches the caller as one StorageIOError."""
    settings = {"sft.reward_threshold": None, "sft.dedup": False}
    sized = gymray.prepare("sft", input=str(big_rollouts), output=str(tmp_path / "m"), **settings)
    files = [p for p in (tmp_path / "m").rglob("*") if p.is_file() and p.name != MANIFEST]
    parts = sum(p.stat().st_size for p in files if p.suffix in (".jsonl", ".parquet"))
    train = (tmp_path / "m" / "train.jsonl").stat().st_size
    # the parts (as big as the files they become) fit; half of train.jsonl more does not
    mnt = small_fs((parts + train // 2) // 1024 + 4 * len(files) + 64)
    out = mnt / "ds"
    with pytest.raises(StorageIOError) as e:
        gymray.prepare("sft", input=str(big_rollouts), output=str(out), **settings)
    assert re.fullmatch(
        NO_SPACE.format(out=re.escape(str(out)), file=r"(train|val|filtered|rejects)\.jsonl"),
        str(e.value),
    ), str(e.value)
    assert e.value.exit_code == EXIT_IO
    assert os.listdir(mnt) == []
    assert sized.counts["records"]["train"]


def test_disk_full_writing_the_manifest_on_the_driver(small_fs):
    mnt = small_fs(256)
    out = mnt / "ds"
    st = Staging(str(out))
    with open(mnt / "filler", "wb", buffering=0) as f:  # fill it up, to the last page
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(
        StorageIOError, match=NO_SPACE.format(out=re.escape(str(out)), file=MANIFEST)
    ):
        st.commit({"fingerprint": "x"})
    st.abort()
    assert os.listdir(mnt) == ["filler"]


@pytest.mark.usefixtures("ray_session")
def test_a_read_only_output_is_one_line_and_exit_8(small_fs, rollouts):
    # (root writes through permission bits, so a read-only mount stands in for EACCES)
    mnt = small_fs(256, ",ro")
    out = mnt / "ds"
    with pytest.raises(StorageIOError) as e:
        gymray.prepare("sft", input=str(rollouts), output=str(out), **KEEP_ALL)
    assert str(e.value) == (
        f"read-only file system writing {out}: make it writable for gymray and its Ray "
        "workers, or choose another output"
    )
    assert e.value.exit_code == EXIT_IO


def test_an_output_replaced_while_it_is_listed_is_looked_at_again(tmp_path, monkeypatch):
    """Concurrent overwrites rename datasets in and out: a run that found the output a
    directory and then could not list it (gone meanwhile) once failed with "cannot list
    output ... No such file or directory" (a CI run of the 8-way race above)."""
    from gymray.storage import commit

    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    local = pafs.LocalFileSystem()
    listings = []

    class Racing:  # the local file system, but the first listing finds the output gone
        def get_file_info(self, what):
            if isinstance(what, pafs.FileSelector):
                listings.append(what.base_dir)
                if len(listings) == 1:
                    raise FileNotFoundError(2, "No such file or directory", what.base_dir)
            return local.get_file_info(what)

        def __getattr__(self, name):  # reading the manifest: as the local file system does
            return getattr(local, name)

    monkeypatch.setattr(commit, "filesystem", lambda uri, storage=None: (Racing(), uri))
    assert commit.inspect_output(str(out)) == ("other", None)  # looked again: a user's dir
    assert listings == [str(out), str(out)]
