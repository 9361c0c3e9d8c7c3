"""gymray.jobs.client: reaching the job API (address, auth token) and checking that
the cluster can ever give what a job asks, against a real Ray head."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading

import pytest
from nemo_rl_standin import write_dataset
from ray_head import TIMEOUT_S, driver_argv, free_port, job_ids, settings, wait_status

from gymray import cli, errors, jobs


def test_missing_or_wrong_token_is_one_clear_line_and_exit_4(
    client_env, checkout, tmp_path, monkeypatch
):
    code = "import sys; from gymray.cli import main; sys.exit(main(['status', *sys.argv[1:]]))"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    runs = {
        "wrong": {**base, "RAY_AUTH_TOKEN": "0" * 32},
        "missing": {**base, "HOME": str(tmp_path)},  # no ~/.ray/auth_token either
        "wrong-file": {**base, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "nope")},
    }
    expect = {"wrong": "wrong token", "missing": "none was sent", "wrong-file": "cannot be read"}
    for name, env in runs.items():
        proc = subprocess.run(
            [sys.executable, "-c", code, "some-id", "--address", client_env.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == errors.EXIT_AUTH, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expect[name] in lines[0], (name, proc.stderr)
        assert "Traceback" not in proc.stderr
    # An address nobody listens on is its own exit code.
    assert cli.main(["status", "some-id", "--address", f"http://127.0.0.1:{free_port()}"]) == 5
    # The token file path works when it holds the right token.
    (tmp_path / "tok").write_text(client_env.token + "\n")
    proc = subprocess.run(
        [sys.executable, "-c", code, "some-id", "--address", client_env.address],
        env={**base, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == errors.EXIT_USAGE and "no job some-id" in proc.stderr
    # Submitting with a wrong token fails the same way, before anything is written.
    monkeypatch.setenv("RAY_AUTH_TOKEN", "1" * 32)
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    with pytest.raises(errors.AuthError) as e:
        jobs.submit_training("sft", manifest, settings(client_env, checkout))
    assert e.value.exit_code == errors.EXIT_AUTH
    assert not (tmp_path / "ds" / "runs").exists()


def test_resources_the_cluster_can_never_give_are_refused(client, client_env, checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    before = job_ids(client)
    with pytest.raises(errors.ResourceError) as e:
        jobs.submit_training(
            "sft", manifest, settings(client_env, checkout, entrypoint_num_cpus=64)
        )
    assert "job.entrypoint_num_cpus=64" in str(e.value) and "CPU of 4" in str(e.value)
    with pytest.raises(errors.ResourceError, match="GPU of 0"):
        jobs.submit_training("sft", manifest, settings(client_env, checkout, entrypoint_num_gpus=1))
    assert job_ids(client) == before


def test_child_that_cannot_fit_next_to_its_driver_job_is_refused(client, checkout, tmp_path):
    # A child PENDING behind its own parent would wait forever (and cannot be stopped).
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    job = {
        "nemo_rl_dir": str(checkout),
        "launcher": shlex.quote(sys.executable),
        "entrypoint_num_cpus": 2,
    }
    parent = client.submit_job(
        entrypoint=shlex.join(driver_argv("sft", manifest, job, {})),
        entrypoint_num_cpus=3,
        submission_id=f"driver-{secrets.token_hex(4)}",
    )
    status = wait_status(client, parent, {"SUCCEEDED", "FAILED", "STOPPED"})
    logs = client.get_job_logs(parent)
    assert status == "FAILED", logs
    assert client.get_job_info(parent).driver_exit_code == errors.EXIT_USAGE
    assert f"job.entrypoint_num_cpus=2 plus the 3 held by the parent job {parent}" in logs
    assert "CPU of 4" in logs and "Traceback" not in logs
    assert not [
        j for j in client.list_jobs() if (j.metadata or {}).get("gymray.parent_job") == parent
    ]


NOTEBOOK = """
import json, sys, ray, gymray
# a notebook: connected to the cluster by its GCS address, no job.address anywhere
ray.init(address=sys.argv[1], log_to_driver=False)
ds = gymray.prepare("sft", input=sys.argv[2], output=sys.argv[3], **{"sft.reward_threshold": 0})
job = gymray.submit(ds, job=json.loads(sys.argv[4]))
print("JOB", job.submission_id, job.wait(), flush=True)
"""


def test_a_notebook_connected_by_address_submits_to_that_cluster(
    head, client_env, checkout, tmp_path
):
    """After ray.init(address=...), submit() uses the connected cluster's job API (from
    Ray itself), not Ray's local auto-detection or RAY_ADDRESS."""
    from gymray.samples.generate import HERE

    env = {k: v for k, v in head.env.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    job = {"nemo_rl_dir": str(checkout), "launcher": sys.executable, "entrypoint_num_cpus": 0.5}
    proc = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, head.gcs, str(HERE / "rollouts.jsonl"),
         str(tmp_path / "ds"), json.dumps(job)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("JOB ")]
    _, sid, status = line.split()
    assert status == "SUCCEEDED"
    client = jobs.connect(head.address)
    assert client.get_job_info(sid).status.value == "SUCCEEDED"


def test_auth_token_comes_from_env_then_file_then_home(tmp_path, monkeypatch):
    from gymray.jobs.client import auth_token

    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    assert auth_token() == "home-token"
    (tmp_path / "tok").write_text("  file-token \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert auth_token() == "file-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert auth_token() == "env-token"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nope"))
    with pytest.raises(errors.AuthError, match="RAY_AUTH_TOKEN_PATH=.*nope cannot be read"):
        auth_token()


def test_an_address_answering_in_binary_is_taken_for_a_gcs_not_a_crash():
    """``--address host:port`` is tried as the dashboard first. A GCS port answers that
    probe in binary: it was an unexpected BadStatusLine (exit 9), and is a GCS address."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00\xfe\x00\x00\x00\x01")

    threading.Thread(target=answer, daemon=True).start()
    try:
        assert jobs.client._answers_http(f"127.0.0.1:{server.getsockname()[1]}") is False
    finally:
        server.close()


LAUNCH_BY_GCS = """
import sys
from gymray import api, jobs
from gymray.config import load_settings
settings = load_settings("sft", [f"ray.address={sys.argv[1]}"])
print(api.job_address(settings), jobs.connect(api.job_address(settings))._address)
given = load_settings("sft", [f"ray.address={sys.argv[1]}", "job.address=http://h:1"])
print(api.job_address(given), api.job_address(load_settings("sft", ["ray.address=auto"])))
"""


def test_a_launch_finds_the_job_api_of_the_cluster_ray_address_names(head):
    """``ray.address=<GCS>`` without ``job.address``: the launch's job API is checked
    before the prepare joins Ray, and was looked for on this machine only ('no Ray job
    API to talk to', exit 5, for a head started with its own --temp-dir or elsewhere).
    A process of its own: Ray reads RAY_AUTH_MODE once, as it starts."""
    env = {k: v for k, v in head.env.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    proc = subprocess.run([sys.executable, "-c", LAUNCH_BY_GCS, head.gcs], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found, given = proc.stdout.splitlines()
    assert found.split() == [head.gcs, head.address]
    assert given.split() == ["http://h:1", "None"]
