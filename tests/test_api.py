"""The Python API as a notebook uses it: results to look at, warnings in the log."""

from __future__ import annotations

import logging

import pytest

import gymray
from gymray.samples.generate import HERE

SAMPLE = str(HERE / "rollouts.jsonl")
pytestmark = pytest.mark.usefixtures("ray_session")


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
