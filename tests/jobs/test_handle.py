"""gymray.jobs.handle: following a submitted job (status, exit codes, logs, stop,
attach) against a real Ray head; the redaction of secrets from what it shows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from nemo_rl_standin import write_dataset
from ray_head import TIMEOUT_S, driver_argv, job_ids, settings, wait_status

from gymray import cli, errors, jobs


def test_failed_job_exit_codes_status_and_attach(client, client_env, checkout, tmp_path, capsys):
    manifest = write_dataset(tmp_path / "ds", "sft", "simple")
    job = settings(client_env, checkout)
    overrides = ["++standin.mode=fail"]
    handle = jobs.submit_training("sft", manifest, job, overrides)
    assert not handle.attached
    assert cli.follow(handle) == errors.EXIT_FAILED
    out = capsys.readouterr()
    assert "stand-in failing on purpose" in out.out
    assert f"job {handle.submission_id} FAILED" in out.err
    assert handle.driver_exit_code() == 1

    assert cli.main(["status", handle.submission_id, "--address", client_env.address]) == 1
    assert f"{handle.submission_id} FAILED" in capsys.readouterr().out
    code = cli.main(["status", handle.submission_id, "--address", client_env.address, "--json"])
    out = json.loads(capsys.readouterr().out)
    summary = out["job"]
    assert code == 1 and out["exit_code"] == 1 and out["ok"] is False and out["error"] is None
    assert summary["status"] == "FAILED" and summary["exit_code"] == 1
    assert summary["metadata"]["gymray.algo"] == "sft" and out["command"] == "status"
    assert cli.main(["status", "gymray-sft-nosuchjob", "--address", client_env.address]) == 2
    assert "no job gymray-sft-nosuchjob" in capsys.readouterr().err

    # Rerunning the same step attaches and reports the failure instead of training again.
    before = job_ids(client)
    again = jobs.submit_training("sft", manifest, job, overrides)
    assert again.attached and again.submission_id == handle.submission_id
    assert cli.follow(again) == errors.EXIT_FAILED
    assert "already FAILED" in capsys.readouterr().err
    assert job_ids(client) == before

    # Opting in to retries submits the next attempt on the same run dir.
    retry = jobs.submit_training("sft", manifest, {**job, "on_failed": "retry"}, overrides)
    assert retry.submission_id == f"{handle.submission_id}-2" and not retry.attached
    assert retry.config.run_dir == handle.config.run_dir
    assert retry.wait() == "FAILED"


def test_sigterm_to_the_follower_stops_the_child_job(client, client_env, checkout, tmp_path):
    manifest = write_dataset(tmp_path / "ds", "grpo", "math")
    job = settings(client_env, checkout)
    overrides = {"++standin": {"mode": "sleep", "sleep_s": 120}}
    sid = jobs.submit_training("grpo", manifest, job, overrides, dry_run=True).submission_id
    env = {**os.environ, "RAY_AUTH_TOKEN": client_env.token}
    follower = subprocess.Popen(
        driver_argv("grpo", manifest, job, overrides),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_status(client, sid, {"RUNNING"})
        deadline = time.monotonic() + 30
        while "mode=sleep" not in client.get_job_logs(sid):
            assert time.monotonic() < deadline, "stand-in never started"
            time.sleep(0.3)
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == errors.EXIT_STOPPED, err
    assert "SIGTERM: stopping job" in err
    assert client.get_job_status(sid).value == "STOPPED"
    assert "Traceback" not in err


def test_stop_and_logs_verbs(client, client_env, checkout, tmp_path, capsys):
    manifest = write_dataset(tmp_path / "ds", "sft", "simple")
    handle = jobs.submit_training(
        "sft", manifest, settings(client_env, checkout), ["++standin.mode=sleep"]
    )
    # Waiting with a timeout gives up with exit 6 and leaves the job running.
    handle.timeout_s = 1
    assert cli.follow(handle) == errors.EXIT_TIMEOUT
    assert "keeps running" in capsys.readouterr().err
    assert handle.status() in ("PENDING", "RUNNING")
    deadline = time.monotonic() + TIMEOUT_S
    while "mode=sleep" not in handle.logs():
        assert time.monotonic() < deadline, "stand-in never started"
        time.sleep(0.3)
    # Following a job this process did not submit: SIGTERM (or Ctrl-C) only detaches.
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = cli.main(["status", handle.submission_id, "--follow", "--address",
                         client_env.address])  # fmt: skip
    finally:
        timer.cancel()
    assert code == errors.EXIT_OK, capsys.readouterr().err
    assert f"detached; job {handle.submission_id} keeps running" in capsys.readouterr().err
    assert handle.status() == "RUNNING"
    assert cli.main(["stop", handle.submission_id, "--address", client_env.address]) == 0
    assert f"job {handle.submission_id} STOPPED" in capsys.readouterr().err
    assert handle.status() == "STOPPED" and handle.exit_code() == errors.EXIT_STOPPED
    assert cli.main(["logs", handle.submission_id, "--address", client_env.address]) == 0
    assert "mode=sleep" in capsys.readouterr().out
    assert cli.main(["status", handle.submission_id, "--address", client_env.address]) == 3
    assert cli.main(["frobnicate", "x"]) == errors.EXIT_USAGE


def test_redactor_blanks_secret_values_longest_first_and_keeps_short_ones():
    from gymray.jobs.handle import REDACTED, Redactor

    r = Redactor({"TOKEN": "abcdef123", "INNER": "abcdef", "FLAG": "1"})
    assert r.text("t=abcdef123 i=abcdef f=1") == f"t={REDACTED} i={REDACTED} f=1"
    assert r.env({"TOKEN": "x", "PATH": "/bin"}) == {"TOKEN": REDACTED, "PATH": "/bin"}
    nested = {"argv": ["--key", "abcdef123"], "n": 3, "env": {"A": "say abcdef"}}
    assert r.deep(nested) == {"argv": ["--key", REDACTED], "n": 3, "env": {"A": f"say {REDACTED}"}}
    assert Redactor(None).text("abcdef123") == "abcdef123"
