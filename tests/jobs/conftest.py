"""The session's Ray head with token auth, and a client of it, for the job tests."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from nemo_rl_standin import make_checkout
from ray_head import RAY, Head, _head_processes, _kill, free_port

from gymray import jobs


@pytest.fixture(scope="session")
def head():
    token = secrets.token_hex(16)
    # Short: Ray puts unix sockets under it.
    temp_dir = tempfile.mkdtemp(prefix="grj", dir="/tmp")
    port, dash = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")
    }
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
    )
    cmd = [
        RAY,
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--include-dashboard=true",
        "--num-cpus=4",
        f"--temp-dir={temp_dir}",
        # Fixed defaults (10001, 52365) would collide with another session's head.
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
    ]
    gcs = f"127.0.0.1:{port}"
    try:
        # cwd: job drivers start there, and must import the installed gymray, not a tree.
        subprocess.run(cmd, env=env, cwd=temp_dir, check=True, capture_output=True, timeout=120)
        yield Head(f"http://127.0.0.1:{dash}", token, env, gcs)
    finally:
        _kill(_head_processes(temp_dir, gcs))
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def client_env(head, monkeypatch):
    """This process talks to the head like a user's laptop: token in RAY_AUTH_TOKEN."""
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    return head


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("nemo-rl"))


@pytest.fixture
def client(client_env):
    return jobs.connect(client_env.address)
