"""Shared test fixtures: the real NeMo Gym fixtures in ../shared, one local Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GYMRAY_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "nemo_gym"


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.is_file():
        pytest.skip(f"shared fixture missing: {path}")
    return path


def rollout_files() -> list[Path]:
    from gymray.rollouts import is_sidecar

    return sorted(p for p in FIXTURES.rglob("*rollouts*.jsonl") if not is_sidecar(p.name))


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for the whole session (4-7 s to start here)."""
    import ray

    if not ray.is_initialized():
        # address="local": never attach to a head another test (or a developer) started
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            log_to_driver=False,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
