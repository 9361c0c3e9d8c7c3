"""Session fixtures: one local Ray, one S3 server (helpers are in support.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from support import S3_BUCKET


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
