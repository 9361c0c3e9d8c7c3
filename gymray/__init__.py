"""gymray: NeMo Gym rollouts to NeMo RL datasets and training jobs, on Ray."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PrepareResult", "__version__", "load", "prepare", "run", "submit"]

# The public API, imported when first used (PEP 562): a Ray worker that runs the
# engine imports ``gymray.engine...`` without the job client, NeMo RL tooling and
# report writers the API brings (0.3 CPU-s of every worker's start-up).
_EXPORTS = {
    "load": "gymray.api",
    "prepare": "gymray.api",
    "run": "gymray.api",
    "submit": "gymray.api",
    "PrepareResult": "gymray.dataset.result",
}

if TYPE_CHECKING:
    from gymray.api import load, prepare, run, submit
    from gymray.dataset.result import PrepareResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gymray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
