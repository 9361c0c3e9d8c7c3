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
S3_BUCKET = "gymray-test"


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.is_file():
        pytest.skip(f"shared fixture missing: {path}")
    return path


def rollout_files() -> list[Path]:
    from gymray.rollouts import is_sidecar

    return sorted(p for p in FIXTURES.rglob("*rollouts*.jsonl") if not is_sidecar(p.name))


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A SeaweedFS S3 endpoint for the session; its credentials in os.environ, the
    way a user would give them to gymray (restored afterwards)."""
    from s3_server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        server.filesystem().create_dir(S3_BUCKET)
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop(grace=3.0)


@pytest.fixture(scope="session")
def ray_session(request):
    """One small local Ray for the whole session (4-7 s to start here). When the
    session has S3 tests, the S3 server starts first: Ray's workers read and
    write data with the credentials of their own environment."""
    import ray

    if any("s3" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("s3")

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


def recipe_spec(settings, inputs):
    """The per-block spec a run of ``settings`` over ``inputs`` ships to its workers."""
    from gymray import recipes
    from gymray.engine.blocks import Spec
    from gymray.recipes.base import Context
    from gymray.rollouts import file_environment

    files = [f.uri for f in inputs]
    recipe = recipes.get(settings.algo)(settings, Context(files))
    return Spec(recipe, files, [file_environment(u) for u in files])
