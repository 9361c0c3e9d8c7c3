"""gymray.dataset.manifest: the fingerprint, reuse or refusal of an existing output,
and what of the settings is recorded."""

from __future__ import annotations

import json

import pytest

from gymray.config import load_settings
from gymray.dataset.manifest import fingerprint, paths, recorded_settings, reusable
from gymray.errors import StorageError
from gymray.storage import MANIFEST, InputFile


def inp(uri, size=10, mtime=1):
    return InputFile(uri=uri, path=uri, size=size, mtime_ns=mtime)


def test_fingerprint_changes_with_inputs_tasks_and_dataset_settings_only():
    s = load_settings("sft", ["output=a"])
    base = fingerprint(s, [inp("x.jsonl")], [])
    assert base == fingerprint(load_settings("sft", ["output=b", "ray.num_cpus=2"]),
                               [inp("x.jsonl")], [])  # fmt: skip
    assert base != fingerprint(s, [inp("x.jsonl", mtime=2)], [])  # the file changed
    assert base != fingerprint(s, [inp("x.jsonl")], [inp("t.jsonl")])
    assert base != fingerprint(load_settings("sft", ["sft.dedup=false"]), [inp("x.jsonl")], [])
    assert len(base) == 32


def test_reuse_refuse_or_replace_an_existing_output(tmp_path):
    out = tmp_path / "ds"
    s = load_settings("sft", [f"output={out}"])
    assert reusable(s, "fp1") is None  # nothing there
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match="not a gymray dataset"):
        reusable(s, "fp1")
    (out / MANIFEST).write_text(json.dumps({"fingerprint": "fp1"}))
    assert reusable(s, "fp1") == {"fingerprint": "fp1"}
    with pytest.raises(StorageError, match=r"fingerprint fp1 != fp2\); set overwrite=true"):
        reusable(s, "fp2")
    again = load_settings("sft", [f"output={out}", "overwrite=true"])
    assert reusable(again, "fp1") is None  # overwrite rebuilds even the same fingerprint


def test_recorded_settings_hide_env_values_and_paths_are_joined():
    s = load_settings("sft", ["job.env_vars.TOKEN=s3cr3t"])
    rec = recorded_settings(s)
    assert rec["job"]["env_vars"] == {"TOKEN": "<redacted>"} and "s3cr3t" not in json.dumps(rec)
    m = {"output": "out/ds", "files": {"train": "train.jsonl", "val": None,
                                       "parquet": {"train": ["parquet/train/p.parquet"]}}}  # fmt: skip
    p = paths(m)
    assert p["train"] == "out/ds/train.jsonl" and "val" not in p
    assert p["manifest"] == f"out/ds/{MANIFEST}"
    assert p["parquet"] == {"train": ["out/ds/parquet/train/p.parquet"]}
