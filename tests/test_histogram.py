"""gymray.histogram: reward summaries and their text bars."""

from __future__ import annotations

import numpy as np

from gymray.histogram import HIST_BINS, histogram_lines, reward_summary


def test_summary_counts_every_reward_once_within_the_range():
    rewards = np.array([-100.0, 0.0, 0.0, 0.5, 1.0, 19.4])  # Gym's rewards are not in [0, 1]
    s = reward_summary(rewards)
    assert (s["count"], s["min"], s["max"]) == (6, -100.0, 19.4)
    assert s["mean"] == rewards.mean()
    h = s["histogram"]
    assert len(h["edges"]) == HIST_BINS + 1 and len(h["counts"]) == HIST_BINS
    assert sum(h["counts"]) == 6 and h["counts"][0] == 1 and h["counts"][-1] == 1
    assert h["edges"][0] == -100.0 and h["edges"][-1] == 19.4


def test_all_equal_rewards_make_one_bin_and_no_rewards_a_bare_count():
    s = reward_summary(np.array([1.0, 1.0, 1.0]))
    assert s["histogram"] == {"edges": [1.0, 2.0], "counts": [3]}
    assert reward_summary(np.array([])) == {"count": 0}


def test_bars_scale_to_the_largest_bin_and_a_nonempty_bin_shows():
    lines = histogram_lines({"edges": [0.0, 0.5, 1.0, 1.5], "counts": [100, 1, 0]}, width=10)
    assert len(lines) == 3
    assert lines[0].endswith("#" * 10) and lines[1].endswith(" #") and lines[2].endswith("0  ")
    assert "0.5)" in lines[0] and "1.5]" in lines[2]  # half-open bins, the last one closed
