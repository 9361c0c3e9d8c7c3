"""gymray.config: the override grammar, precedence of layers, did-you-mean errors,
defaults, and the job's environment."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from gymray.config import (
    SAMPLE_INPUT,
    JobSettings,
    Settings,
    check_keys,
    help_rows,
    known_paths,
    load_settings,
    parse_items,
    with_job,
)
from gymray.errors import ConfigError


def test_parse_items_follows_nemo_rls_grammar():
    dotlist, removals = parse_items(
        ["sft.format=simple", "++sft.dedup=false", "+split.seed=3", "~ray.block_bytes",
         "nemo_rl.policy.lr=1e-5", "++nemo_rl.policy.fresh=1", "+nemo_rl.x=a=b"]
    )  # fmt: skip
    assert dotlist == [
        "sft.format=simple",
        "sft.dedup=false",  # gymray's keys always exist: ++ and + mean set
        "split.seed=3",
        "nemo_rl.policy.lr=1e-5",
        "nemo_rl.++policy.fresh=1",  # under nemo_rl: the mark reaches NeMo RL's check
        "nemo_rl.++x=a=b",  # only the first = splits
    ]
    assert removals == ["ray.block_bytes"]


@pytest.mark.parametrize(
    ("item", "message"),
    [("~sft.format=x", "takes no value"), ("sft.format", "expected key=value")],
)
def test_parse_items_refuses_what_it_cannot_mean(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_items([item])


def test_defaults_without_any_layer():
    s = Settings(algo="sft")
    assert s.input == [SAMPLE_INPUT] and s.output.endswith("gymray-output/sft")
    assert (s.split.val_fraction, s.ray.shuffle, s.overwrite) == (0.05, "auto", False)
    assert s.section() is s.sft
    assert Settings(algo="dpo", input="one.jsonl").input == ["one.jsonl"]  # one or a list


def test_overrides_beat_config_files_which_beat_the_template(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "sft.yaml").write_text("sft:\n  reward_threshold: 0.5\n  dedup: false\n")
    monkeypatch.setenv("GYMRAY_CONFIGS_DIR", str(configs))
    assert load_settings("sft").sft.reward_threshold == 0.5
    mine = tmp_path / "mine.yaml"
    mine.write_text("sft:\n  reward_threshold: 0.7\nsplit:\n  seed: 9\n")
    s = load_settings("sft", ["sft.reward_threshold=0.8"], [str(mine)])
    assert (s.sft.reward_threshold, s.split.seed, s.sft.dedup) == (0.8, 9, False)
    # ~key: back to the built-in default, under every layer
    s = load_settings("sft", ["~sft.dedup"], [str(mine)])
    assert s.sft.dedup is True and s.sft.reward_threshold == 0.7


def test_a_config_file_may_inherit_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("GYMRAY_CONFIGS_DIR", str(tmp_path / "none"))
    (tmp_path / "base.yaml").write_text("split:\n  seed: 4\n  val_fraction: 0.2\n")
    (tmp_path / "run.yaml").write_text("defaults: base.yaml\nsplit:\n  seed: 5\n")
    s = load_settings("sft", None, [str(tmp_path / "run.yaml")])
    assert (s.split.seed, s.split.val_fraction) == (5, 0.2)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings("sft", None, [str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    ("algo", "items", "hint"),
    [
        ("sft", ["sft.reward_treshold=0.5"], "did you mean 'sft.reward_threshold'"),
        ("sft", ["ray.blok_bytes=4096"], "did you mean 'ray.block_bytes'"),
        ("sf", [], "did you mean 'sft'"),
    ],
)
def test_unknown_names_say_the_closest(algo, items, hint):
    with pytest.raises(ConfigError, match=hint):
        load_settings(algo, items)


def test_invalid_values_name_the_key_and_the_value():
    with pytest.raises(ConfigError) as e:
        load_settings("sft", ["split.val_fraction=1.5"])
    assert "split.val_fraction" in str(e.value) and "1.5" in str(e.value)
    with pytest.raises(ConfigError, match="ray.shuffle"):
        load_settings("sft", ["ray.shuffle=everything"])


def test_free_mappings_and_nemo_rl_take_any_key():
    check_keys({"job": {"env_vars": {"ANY": "x"}, "metadata": {"k": "v"}},
                "nemo_rl": {"whatever": {"deep": 1}}}, known_paths())  # fmt: skip
    with pytest.raises(ConfigError, match="unknown setting 'job.env_var'"):
        check_keys({"job": {"env_var": {}}}, known_paths())


def test_every_recipe_has_its_section_and_fingerprint_ignores_where_and_how():
    paths = known_paths()
    for algo in ("sft", "dpo", "grpo"):
        assert algo in paths and f"{algo}." in " ".join(paths)
    a = load_settings("dpo", ["output=a", "ray.block_bytes=4096", "job.launcher=python"])
    b = load_settings("dpo", ["output=b"])
    assert a.fingerprint_settings() == b.fingerprint_settings()
    assert set(a.fingerprint_settings()) == {"algo", "tasks", "chat", "split", "dpo"}
    c = load_settings("dpo", ["dpo.min_gap=0.5"])
    assert c.fingerprint_settings() != b.fingerprint_settings()


def test_job_env_takes_pass_env_and_env_vars_with_secrets_hidden(monkeypatch):
    monkeypatch.setenv("GYMRAY_TEST_PASS", "from-env")
    job = JobSettings(pass_env=["GYMRAY_TEST_PASS"], env_vars={"TOKEN": "s3cr3t-value"})
    assert job.env() == {"GYMRAY_TEST_PASS": "from-env", "TOKEN": "s3cr3t-value"}
    assert isinstance(job.env_vars["TOKEN"], SecretStr) and "s3cr3t" not in repr(job)
    monkeypatch.delenv("GYMRAY_TEST_PASS")
    with pytest.raises(ConfigError, match="job.pass_env names GYMRAY_TEST_PASS"):
        job.env()


def test_with_job_merges_job_keys_and_nemo_rl_overrides():
    s = load_settings("sft", ["job.launcher=python", "nemo_rl.a=1"])
    merged = with_job(s, {"timeout_s": 5}, {"b": 2})
    assert (merged.job.launcher, merged.job.timeout_s) == ("python", 5)
    assert merged.nemo_rl == {"a": 1, "b": 2}
    with pytest.raises(ConfigError, match="job.timeout_s"):
        with_job(s, {"timeout_s": "soon"}, None)


def test_help_rows_show_this_algorithms_section_and_no_other():
    keys = [k for k, _, _ in help_rows("dpo")]
    assert "dpo.min_gap" in keys and not any(k.startswith(("sft.", "grpo.")) for k in keys)
    assert "algo" not in keys and "split.val_fraction" in keys


def test_an_override_that_is_not_yaml_is_named_in_one_line_with_the_fix():
    """A Jinja chat template on the command line: YAML reads ``{%`` as a mapping. The
    error was 'cannot parse overrides:' and three lines of the YAML scanner."""
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError) as e:
        load_settings("sft", ["split.seed=3", f"nemo_rl.policy.tokenizer.chat_template={template}"])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("cannot parse the value of nemo_rl.policy.tokenizer.chat_template (")
    assert "quote it" in message and "--config" in message
    quoted = load_settings("sft", [f'nemo_rl.policy.tokenizer.chat_template="{template}"'])
    assert quoted.nemo_rl["policy"]["tokenizer"]["chat_template"] == template
