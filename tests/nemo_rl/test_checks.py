"""gymray.nemo_rl.checks: what is refused or warned about before NeMo RL is launched."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gymray import formats
from gymray.errors import ConfigError, EmptyDatasetError
from gymray.nemo_rl import checks

# A template that renders what a tool-calling model's own template renders.
FULL = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[call {{ c.function.name }} {{ c.function.arguments }}]"
    "{% endfor %}</{{ m.role }}>{% endfor %}"
)
# Skips tool turns and tool calls: what a plain chat template does.
PLAIN = "{% for m in messages %}{% if m.role != 'tool' %}{{ m.content }}{% endif %}{% endfor %}"
WITH_CALLS = {"stats": {"notes": {"content:tool_calls": 3}}}


def cfg(template):
    return OmegaConf.create({"policy": {"tokenizer": {"chat_template": template}}})


def test_an_empty_train_split_is_refused_unless_allowed():
    manifest = {"output": "out/ds", "counts": {"records": {"train": 0, "val": 2}}}
    with pytest.raises(EmptyDatasetError, match="out/ds has no training records"):
        checks.empty(manifest, allow_empty=False)
    checks.empty(manifest, allow_empty=True)
    checks.empty({**manifest, "counts": {"records": {"train": 1, "val": 0}}}, False)


def test_select_falls_back_when_absent_or_unresolvable():
    c = OmegaConf.create({"a": {"b": 1}, "r": "${nemo_rl_only:x}"})
    assert checks.select(c, "a.b") == 1
    assert checks.select(c, "a.z") == "<unset>" and checks.select(None, "a.b", 7) == 7
    assert checks.select(c, "r", "fallback") == "fallback"  # a resolver NeMo RL registers


def test_the_probe_conversation_renders_in_the_sandbox():
    out = checks.render_template(FULL)
    assert checks.PROBE_TOOL in out and checks.PROBE_RESULT in out and checks.PROBE_ANSWER in out


@pytest.mark.parametrize("template", ["default", "DEFAULT", FULL])
def test_templates_that_render_tool_calls_pass(template):
    assert checks.chat_template(cfg(template), WITH_CALLS, ".") == []


def test_an_unset_template_is_the_models_own_and_passes():
    assert checks.chat_template(OmegaConf.create({}), WITH_CALLS, ".") == []


def test_templates_that_lose_tool_calls_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="passthrough") as e:
        checks.chat_template(cfg(None), WITH_CALLS, ".")
    assert "nemo_rl.policy.tokenizer.chat_template" in str(e.value) and "3 records" in str(e.value)
    with pytest.raises(ConfigError, match="does not render tool calls or tool results"):
        checks.chat_template(cfg(PLAIN), WITH_CALLS, ".")
    with pytest.raises(ConfigError, match="fails on a conversation with tool calls"):
        checks.chat_template(cfg("{{ raise_exception('no tools') }}"), WITH_CALLS, ".")


def test_without_tool_calls_any_template_will_do():
    assert checks.chat_template(cfg(None), {"stats": {"notes": {}}}, ".") == []


def test_a_jinja_file_is_read_relative_to_the_checkout(tmp_path):
    (tmp_path / "t.jinja").write_text(PLAIN)
    with pytest.raises(ConfigError, match="does not render"):
        checks.chat_template(cfg("t.jinja"), WITH_CALLS, str(tmp_path))
    (warning,) = checks.chat_template(cfg("missing.jinja"), WITH_CALLS, str(tmp_path))
    assert "not readable here" in warning


def lengths_block(chars, records=None):
    return {
        "chars_per_token": 2.0,
        "train": {"records": records or len(chars), "chars": chars},
    }


def test_exceeding_counts_at_or_over_the_limit_as_each_processor_masks():
    block = lengths_block([10.0, 20.0, 30.0])  # 5, 10, 15 tokens at 2 chars a token
    assert checks.exceeding(block, "train", 10, strict=False) == 2  # >= (SFT)
    assert checks.exceeding(block, "train", 10, strict=True) == 1  # > (preference)
    assert checks.exceeding(block, "val", 10, strict=False) == 0
    # chars as quantiles of more records: the share scales to the record count
    assert checks.exceeding(lengths_block([10.0, 30.0], records=100), "train", 10, False) == 50


def test_lengths_warn_with_the_key_to_raise():
    manifest = {"format": "openai", "lengths": lengths_block([10.0, 20.0, 30.0, 40.0])}
    (w,) = checks.lengths(OmegaConf.create({"data": {"max_input_seq_length": 10}}), manifest)
    assert w.startswith("about 3 of 4 train records (75%)") and "max_total_sequence_length" in w
    assert (
        checks.lengths(OmegaConf.create({"data": {"max_input_seq_length": None}}), manifest) == []
    )
    (unread,) = checks.lengths(OmegaConf.create({}), manifest)
    assert "could not be read" in unread
    assert checks.lengths(None, {**manifest, "format": "nemo_gym"}) == []  # Gym rows: not masked
    assert set(checks.MASKED_WHEN) < set(formats.FORMATS)
