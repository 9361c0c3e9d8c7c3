"""gymray.nemo_rl.overrides: NeMo RL's override grammar, and the check of user keys
against the NeMo RL checkout's config (naming the closest key when one is wrong)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from nemo_rl_standin import make_checkout, write_dataset
from omegaconf import OmegaConf

from gymray.errors import ConfigError
from gymray.nemo_rl.build import build_config, write_config
from gymray.nemo_rl.overrides import (
    Override,
    check_override_keys,
    overrides_to_dict,
    parse_overrides,
)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("nemo-rl"))


def job(checkout: Path, **kw) -> dict:
    return {"nemo_rl_dir": str(checkout), "launcher": shlex.quote(sys.executable), **kw}


def test_unknown_key_fails_naming_the_closest(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    with pytest.raises(ConfigError) as e:
        build_config("sft", manifest, job(checkout), {"policy": {"modle_name": "x"}})
    assert "nemo_rl.policy.modle_name" in str(e.value)
    assert "did you mean nemo_rl.policy.model_name" in str(e.value)
    with pytest.raises(ConfigError, match="checkpointing.checkpoint_dir"):
        build_config("sft", manifest, job(checkout), ["checkpointing.checkpoint_di=/x"])


def test_new_keys_allowed_with_plusplus_freeform_or_null_parent(checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "grpo", "nemo_gym")
    overrides = {
        "++policy": {"brand_new": 1},  # ++ on a segment marks what follows as new
        "env": {"nemo_gym": {"anything": 1}},  # env.* is free-form
        "policy.generation.vllm_kwargs.enforce_eager": True,  # *.vllm_kwargs free-form
        "policy.generation.vllm_cfg.tensor_parallel_size": 2,  # exists via defaults chain
    }
    built = build_config("grpo", manifest, job(checkout), overrides)
    assert sorted(built.new_keys) == [
        "env.nemo_gym.anything",
        "policy.brand_new",
        "policy.generation.vllm_kwargs.enforce_eager",
    ]
    sft = write_dataset(tmp_path / "sft", "sft", "openai")
    # policy.generation is null in sft.yaml: NeMo RL's own validation judges sub-keys.
    built = build_config("sft", sft, job(checkout), ["policy.generation.temperature=0.5"])
    assert built.new_keys == ["policy.generation.temperature"]
    built = build_config("sft", sft, job(checkout), ["++totally.new=1"])
    assert OmegaConf.create(built.config_yaml).totally.new == 1


def test_unreadable_checkout_skips_the_key_check_with_a_warning(tmp_path):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    built = build_config(
        "sft", manifest, {"nemo_rl_dir": "/nonexistent/nemo-rl"}, {"policy": {"modle": 1}}
    )
    assert not built.keys_checked
    assert "not checked" in built.warnings[0]


def test_removing_a_key_reaches_nemo_rl_on_its_command_line(checkout, tmp_path):
    """`~key` cannot be written in YAML: NeMo RL applies it as a command-line override."""
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    built = build_config("sft", manifest, job(checkout), ["~logger.wandb"])
    assert built.entrypoint.endswith("'~logger.wandb'")  # quoted for the shell
    write_config(built)
    report = tmp_path / "seen.json"
    argv = shlex.split(built.entrypoint.split("&& ", 1)[1])
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=checkout, capture_output=True,
                          text=True, env={**os.environ, "STANDIN_REPORT": str(report)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(report.read_text())
    assert "wandb" not in seen["config"]["logger"] and "log_dir" in seen["config"]["logger"]


# --- identity and quoting ----------------------------------------------------------------


# --- the grammar, without a checkout ----------------------------------------------------


def test_list_nested_and_dotted_dict_overrides_flatten_to_the_same_keys():
    as_list = parse_overrides(["policy.lr=1e-5", "policy.model_name=m/x", "sft.steps=3"])
    nested = parse_overrides({"policy": {"lr": 1e-5, "model_name": "m/x"}, "sft": {"steps": 3}})
    dotted = parse_overrides({"policy.lr": 1e-5, "policy.model_name": "m/x", "sft.steps": 3})
    assert as_list == nested == dotted
    # values parsed the way OmegaConf's dotlist parses them: a float, not the string
    assert as_list[0] == Override("policy.lr", 1e-5, force=False)


@pytest.mark.parametrize("item", ["++policy.new=1", "+policy.new=1", "policy.++new=1"])
def test_plus_on_any_segment_marks_the_key_new(item):
    (ov,) = parse_overrides([item])
    assert (ov.key, ov.value, ov.force, ov.remove) == ("policy.new", 1, True, False)


def test_tilde_removes_and_removals_stay_out_of_the_yaml():
    ovs = parse_overrides(["~logger.wandb", "logger.log_dir=x"])
    assert ovs[0] == Override("logger.wandb", None, remove=True)
    assert overrides_to_dict(ovs) == {"logger": {"log_dir": "x"}}


def test_later_overrides_of_one_key_win_and_parents_are_made():
    d = overrides_to_dict(parse_overrides(["a.b=1", "a.c.d=2", "a.b=3"]))
    assert d == {"a": {"b": 3, "c": {"d": 2}}}


@pytest.mark.parametrize("bad", [["policy.lr"], ["policy..lr=1"], {"": 1}])
def test_malformed_overrides_are_config_errors(bad):
    with pytest.raises(ConfigError):
        parse_overrides(bad)


def test_check_against_a_config_without_a_checkout():
    known = OmegaConf.create(
        {"policy": {"model_name": "m", "generation": None, "lr": 1.0}, "data": {}}
    )
    ok = parse_overrides(
        ["policy.model_name=x", "data.anything=1", "policy.generation.temperature=0.5",
         "++policy.fresh=1", "~policy.lr"]
    )  # fmt: skip
    assert check_override_keys(ok, known, "base.yaml") == [
        "data.anything",
        "policy.generation.temperature",
        "policy.fresh",
    ]
    with pytest.raises(ConfigError, match="did you mean nemo_rl.policy.model_name") as e:
        check_override_keys(parse_overrides(["policy.model_nam=x"]), known, "base.yaml")
    assert "base.yaml" in str(e.value) and "nemo_rl.++policy.model_nam" in str(e.value)
    with pytest.raises(ConfigError, match="cannot remove nemo_rl.policy.nope"):
        check_override_keys(parse_overrides(["~policy.nope"]), known, "base.yaml")


def test_a_value_nemo_rl_cannot_take_is_refused_before_the_launch():
    """'abc' for a batch size, 'two' for epochs, 3 for the whole policy section were
    written into the config, to fail on the GPU cluster."""
    known = OmegaConf.create({
        "policy": {"train_global_batch_size": 32, "precision": "bfloat16", "lr": 5.0e-6,
                   "max_total_sequence_length": "${data.max_len}", "generation": None,
                   "dtensor_cfg": {"enabled": True}},
        "sft": {"max_num_epochs": 1},
    })  # fmt: skip
    fine = ["policy.train_global_batch_size=64", "policy.lr=1e-5", "policy.lr=1",
            "policy.max_total_sequence_length=4096", "policy.generation.x=1",
            "policy.dtensor_cfg.enabled=false", "policy.precision=float32",
            "policy.train_global_batch_size=null", "sft.max_num_epochs=${sft.other}"]  # fmt: skip
    check_override_keys(parse_overrides(fine), known, "sft.yaml")
    for bad, said in (
        ("policy.train_global_batch_size=abc", "takes a number (32 in sft.yaml), got 'abc'"),
        ("sft.max_num_epochs=two", "takes a number (1 in sft.yaml), got 'two'"),
        ("policy.dtensor_cfg.enabled=yes please", "takes true or false"),
        ("policy=3", "is a section (train_global_batch_size, precision, lr, ...)"),
    ):
        with pytest.raises(ConfigError) as e:
            check_override_keys(parse_overrides([bad]), known, "sft.yaml")
        assert str(e.value).startswith(f"nemo_rl.{bad.split('=')[0]} {said}"), str(e.value)
