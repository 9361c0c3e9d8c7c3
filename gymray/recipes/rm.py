"""Reward-model training: preference pairs, for NeMo RL's ``examples/run_rm.py``.

The pairs are DPO's (same task, same context, chosen scored higher), read by the
same NeMo RL data setup (``PreferenceDataset``). What differs is what is trained:
a Bradley-Terry reward over the whole chosen and rejected sequences (no token
mask), so pairs that differ only before their final message still teach it.
"""

from __future__ import annotations

from gymray.recipes.base import Entrypoint, Outcome, register
from gymray.recipes.dpo import DPO, DPOSettings, explain_pairs


class RMSettings(DPOSettings):
    """``rm.*``: which pairs to make, as for DPO."""


@register
class RM(DPO):
    name = "rm"
    help = "preference pairs for reward-model training (NeMo RL examples/run_rm.py)"
    settings = RMSettings
    entrypoints = {
        "preference": Entrypoint("examples/run_rm.py", "examples/configs/rm.yaml"),
        "binary": Entrypoint("examples/run_rm.py", "examples/configs/rm.yaml"),
    }
    scores_final_message_only = False

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        return explain_pairs(self.name, self.section, outcome)
