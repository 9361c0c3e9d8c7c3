"""SFT records from single rollouts (pure, no Ray)."""

from __future__ import annotations

from support import member

from gymray.chat import ChatSettings
from gymray.recipes.sft import SFTSettings, sft_record

CHAT = ChatSettings()


def test_sft_threshold_and_truncation():
    m = member(0, 0.9)
    assert sft_record(m.rollout, m.source, SFTSettings(), CHAT) == (None, "below_reward_threshold")
    m.rollout.truncated = "max_output_tokens"
    assert sft_record(m.rollout, m.source, SFTSettings(reward_threshold=None), CHAT) == (
        None,
        "truncated",
    )
