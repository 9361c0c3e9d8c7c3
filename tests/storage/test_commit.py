"""What a prepare may replace, on real files (and a real S3 server where it matters).

``overwrite=true`` replaces a gymray dataset and nothing else: not a directory of
someone's files, not a home directory, not the directory a run starts in, and
never the rollouts a dataset is made from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import S3_BUCKET, fixture

import gymray
from gymray.errors import EXIT_USAGE
from gymray.storage import MANIFEST, StorageError

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
    from gymray.storage.commit import refuse_unless_replaceable

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
    import pyarrow.fs as pafs

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
    from gymray.storage.commit import refuse_unless_replaceable

    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match=r"is a file"):
        refuse_unless_replaceable(str(tmp_path / "f"), overwrite=True)
    for i in range(8):
        (tmp_path / "d" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "d" / f"{i}.txt").write_text("x")
    with pytest.raises(StorageError, match=r"8 entries: 0\.txt, 1\.txt, 2\.txt, \.\.\."):
        refuse_unless_replaceable(str(tmp_path / "d"), overwrite=True)
    assert os.listdir(tmp_path / "d")
