"""gymray: NeMo Gym rollouts to NeMo RL datasets and training jobs, on Ray."""

__version__ = "0.1.0"

from gymray.api import load, prepare, run, submit  # noqa: E402
from gymray.dataset.result import PrepareResult  # noqa: E402

__all__ = ["PrepareResult", "__version__", "load", "prepare", "run", "submit"]
