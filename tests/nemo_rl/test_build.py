"""gymray.nemo_rl.build: data blocks, the config gymray writes, the entrypoint.

Pure and fast: no Ray. The NeMo RL checkout is the stand-in from nemo_rl_standin, whose
scripts load the written config the way NeMo RL does and check the records.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from nemo_rl_standin import DATA_BLOCKS, make_checkout, write_dataset
from omegaconf import OmegaConf

from gymray import formats
from gymray.errors import ConfigError
from gymray.nemo_rl import build as nemo_rl
from gymray.nemo_rl.build import build_config, write_config


def data_config(algo: str, fmt: str, train: str, val: str | None, tools_differ: bool) -> dict:
    nemo_rl.entrypoint(algo, fmt)  # the format must be one the algorithm trains
    return formats.get(fmt).data_config(train, val, {"tools_differ": tools_differ})


CASES = [
    ("sft", "openai", "examples/run_sft.py"),
    ("sft", "simple", "examples/run_sft.py"),
    ("dpo", "preference", "examples/run_dpo.py"),
    ("dpo", "binary", "examples/run_dpo.py"),
    ("grpo", "math", "examples/run_grpo.py"),
    ("grpo", "nemo_gym", "examples/nemo_gym/run_grpo_nemo_gym.py"),
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("nemo-rl"))


def job(checkout: Path, **kw) -> dict:
    return {"nemo_rl_dir": str(checkout), "launcher": shlex.quote(sys.executable), **kw}


def run_entrypoint(built, report: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STANDIN_REPORT": str(report)}
    return subprocess.run(
        built.entrypoint, shell=True, env=env, capture_output=True, text=True, timeout=60
    )


# --- data blocks -----------------------------------------------------------------------


def test_data_config_blocks_follow_the_contract_table():
    sft = data_config("sft", "openai", "/d/train.jsonl", "/d/val.jsonl", True)["data"]
    assert sft["train"] == {
        "dataset_name": "openai_format",
        "data_path": "/d/train.jsonl",
        "chat_key": "messages",
        "tool_key": "tools",
        "use_preserving_dataset": True,
    }
    assert sft["validation"]["data_path"] == "/d/val.jsonl"
    simple = data_config("sft", "simple", "/t", None, False)["data"]
    assert (simple["train"]["dataset_name"], simple["train"]["output_key"]) == (
        "ResponseDataset",
        "output",
    )
    assert simple["validation"] is None
    assert data_config("dpo", "preference", "/t", None, False)["data"]["train"] == {
        "dataset_name": "PreferenceDataset",
        "data_path": "/t",
    }
    binary = data_config("dpo", "binary", "/t", None, False)["data"]["train"]
    assert (binary["prompt_key"], binary["chosen_key"], binary["rejected_key"]) == (
        "prompt",
        "chosen",
        "rejected",
    )
    math = data_config("grpo", "math", "/t", None, False)["data"]["train"]
    assert (math["input_key"], math["output_key"]) == ("input", "ground_truth")
    gym = data_config("grpo", "nemo_gym", "/t", None, False)
    assert gym["data"]["default"] == {
        "dataset_name": "NemoGymDataset",
        "env_name": "nemo_gym",
        "processor": "nemo_gym_data_processor",
    }
    assert gym["env"] == {"should_use_nemo_gym": True}


def test_format_must_match_algorithm():
    with pytest.raises(ConfigError, match="takes openai or simple"):
        data_config("sft", "preference", "/t", None, False)
    with pytest.raises(KeyError):
        data_config("ppo", "openai", "/t", None, False)


# --- the written config, loaded and run by the stand-in ---------------------------------


@pytest.mark.parametrize("algo,fmt,script", CASES)
def test_written_config_runs_the_right_script_and_reads_the_data(
    checkout, tmp_path, algo, fmt, script
):
    manifest = write_dataset(tmp_path / "ds", algo, fmt, n_train=4, n_val=2)
    built = build_config(algo, manifest, job(checkout), {"policy": {"model_name": "m/x"}})
    assert built.script == script and built.keys_checked
    write_config(built)
    report = tmp_path / "report.json"
    proc = run_entrypoint(built, report)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(report.read_text())
    assert seen["script"] == script
    assert seen["cwd"] == str(checkout)
    assert seen["records"] == {"train": 4, "val": 2}
    cfg = seen["config"]
    assert cfg["policy"]["model_name"] == "m/x"
    # The base config's hub blocks were replaced whole, not merged into.
    assert "split" not in cfg["data"]["train"] and "split" not in cfg["data"]["validation"]
    assert cfg["data"]["validation"]["data_path"] == str(tmp_path / "ds" / "val.jsonl")
    # Results land next to the data, in the run's own dir.
    assert cfg["checkpointing"]["checkpoint_dir"] == f"{built.run_dir}/checkpoints"
    assert (Path(built.run_dir) / "checkpoints" / "step_1").is_dir()
    assert Path(built.run_dir).parent == tmp_path / "ds" / "runs"
    # The rest of the base config survives.
    assert cfg["cluster"]["gpus_per_node"] == 1
    assert (tmp_path / "ds" / "nemo_rl.yaml").read_text() == built.config_yaml


def test_gym_config_inherits_through_relative_defaults(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "grpo", "nemo_gym")
    built = build_config("grpo", manifest, job(checkout), None)
    write_config(built)
    proc = run_entrypoint(built, tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "r.json").read_text())["config"]
    assert cfg["env"]["should_use_nemo_gym"] is True  # the gym config said false
    assert cfg["policy"]["generation"]["backend"] == "vllm"  # from grpo_math_1B.yaml
    assert cfg["data"]["default"]["processor"] == "nemo_gym_data_processor"
    assert cfg["data"]["default"]["prompt_file"] == "examples/prompts/cot.txt"


def test_without_val_file_the_hub_validation_block_is_nulled(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai", n_val=0)
    built = build_config("sft", manifest, job(checkout), None)
    write_config(built)
    proc = run_entrypoint(built, tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads((tmp_path / "r.json").read_text())
    assert seen["config"]["data"]["validation"] is None
    assert seen["records"] == {"train": 3, "val": None}


def test_merging_the_data_block_naively_hits_the_validation_trap(checkout, tmp_path):
    # Guards the stand-in itself: without gymray's reset file, NeMo RL's key-by-key merge
    # keeps the hub `split: validation` and loading fails with KeyError 'validation'.
    write_dataset(tmp_path / "ds", "sft", "openai")
    train = {**DATA_BLOCKS["openai"], "data_path": str(tmp_path / "ds" / "train.jsonl")}
    naive = {"defaults": str(checkout / "examples/configs/sft.yaml"), "data": {"train": train}}
    cfg = tmp_path / "naive.yaml"
    cfg.write_text(OmegaConf.to_yaml(OmegaConf.create(naive)))
    proc = subprocess.run(
        [sys.executable, "examples/run_sft.py", "--config", str(cfg)],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "KeyError: 'validation'" in proc.stderr


def test_precedence_data_then_template_then_user(checkout, tmp_path):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "sft.yaml").write_text(
        "sft:\n  max_num_steps: 7\n  val_period: 3\nlogger:\n  log_dir: '{output}/tb-{algo}'\n"
    )
    manifest = write_dataset(tmp_path / "ds", "sft", "simple")
    built = build_config("sft", manifest, job(checkout), ["sft.val_period=5"], templates_dir=tdir)
    cfg = OmegaConf.create(built.config_yaml)
    assert cfg.sft.max_num_steps == 7 and cfg.sft.val_period == 5
    assert cfg.logger.log_dir == f"{tmp_path / 'ds'}/tb-sft"
    assert cfg.defaults == built.base_path
    assert OmegaConf.create(built.base_yaml).defaults == str(checkout / "examples/configs/sft.yaml")


def test_missing_entrypoint_in_checkout_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    manifest = write_dataset(tmp_path / "ds", "dpo", "binary")
    with pytest.raises(ConfigError, match="examples/run_dpo.py not found"):
        build_config("dpo", manifest, {"nemo_rl_dir": str(tmp_path / "empty")})


def test_settings_errors_say_what_to_do(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    with pytest.raises(ConfigError, match="job.nemo_rl_dir is not set"):
        build_config("sft", manifest, {})
    with pytest.raises(ConfigError, match="absolute"):
        build_config("sft", manifest, {"nemo_rl_dir": "nemo-rl"})
    with pytest.raises(ConfigError, match="prepared for sft, not dpo"):
        build_config("dpo", manifest, job(checkout))
    remote = {**manifest, "output": "s3://bucket/ds"}
    with pytest.raises(ConfigError, match="job.runs_dir"):
        build_config("sft", remote, job(checkout))
    built = build_config("sft", remote, job(checkout, runs_dir=str(tmp_path / "runs")))
    assert built.latest_path is None
    assert "s3://bucket/ds/train.jsonl" in built.config_yaml
    with pytest.raises(ConfigError, match=r"cannot remove nemo_rl\.policy\.no_such_key"):
        build_config("sft", manifest, job(checkout), ["~policy.no_such_key"])
    with pytest.raises(ConfigError, match="lacks fingerprint"):
        build_config("sft", {**manifest, "fingerprint": ""}, job(checkout))


def test_run_id_is_deterministic_and_tracks_what_is_trained(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "dpo", "preference")
    a = build_config("dpo", manifest, job(checkout), {"dpo": {"max_num_steps": 5}})
    b = build_config("dpo", manifest, job(checkout), ["dpo.max_num_steps=5"])
    assert a.run_id == b.run_id and a.config_yaml == b.config_yaml
    assert a.run_id.startswith("dpo-") and len(a.run_id) == len("dpo-") + 12
    c = build_config("dpo", manifest, job(checkout), {"dpo": {"max_num_steps": 6}})
    d = build_config("dpo", {**manifest, "fingerprint": "beef"}, job(checkout))
    assert len({a.run_id, c.run_id, d.run_id}) == 3


def test_entrypoint_quotes_every_argument(tmp_path):
    evil = tmp_path / "ck $(touch PWNED); x"
    make_checkout(evil)
    out = tmp_path / "data 'q' ;`touch PWNED2`"
    manifest = write_dataset(out, "sft", "simple")
    weird_python = tmp_path / "py bin" / "python"
    weird_python.parent.mkdir()
    weird_python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    weird_python.chmod(0o755)
    built = build_config("sft", manifest, job(evil, launcher=shlex.quote(str(weird_python))))
    assert built.entrypoint.startswith(f"cd {shlex.quote(str(evil))} && ")
    argv = shlex.split(built.entrypoint.split(" && ", 1)[1])
    assert argv == [str(weird_python), "examples/run_sft.py", "--config", built.config_path]
    write_config(built)
    proc = subprocess.run(
        built.entrypoint, shell=True, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("PWNED*"))
    assert nemo_rl.entrypoint_command("/r", "uv run python", "s.py", "/c") == (
        "cd /r && uv run python s.py --config /c"
    )
    with pytest.raises(ConfigError, match="launcher"):
        build_config("sft", manifest, job(evil, launcher="'unclosed"))
