"""gymray.jobs.submit: submitting NeMo RL as a Ray job against a real Ray head with
token auth (no mocks of Ray): ids, secrets, dry runs, driver jobs with children.

The head is the session's (tests/jobs/conftest.py); the NeMo RL checkout is the
stand-in from nemo_rl_standin; datasets are written by hand or prepared from a
generated NeMo Gym tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import subprocess
import sys

import pytest
from nemo_rl_standin import write_dataset
from omegaconf import OmegaConf
from ray_head import TIMEOUT_S, driver_argv, job_ids, settings, wait_status
from support import REPO

from gymray import cli, errors, jobs
from gymray.config import JobSettings
from gymray.errors import ConfigError
from gymray.samples.gym_shapes import gym_tree


def test_nested_driver_job_submits_and_follows_the_training_as_a_child(
    client, client_env, checkout, tmp_path
):
    manifest = write_dataset(tmp_path / "ds", "dpo", "preference", n_train=5, n_val=2)
    report = tmp_path / "report.json"
    # No address: inside a Ray Job gymray must find the same cluster by itself.
    job = {"nemo_rl_dir": str(checkout), "launcher": shlex.quote(sys.executable)}
    overrides = {"++standin": {"report": str(report)}, "dpo": {"max_num_steps": 3}}
    parent = client.submit_job(
        entrypoint=shlex.join(driver_argv("dpo", manifest, job, overrides)),
        entrypoint_num_cpus=1,
        submission_id=f"driver-{secrets.token_hex(4)}",
    )
    status = wait_status(client, parent, {"SUCCEEDED", "FAILED", "STOPPED"})
    logs = client.get_job_logs(parent)
    assert status == "SUCCEEDED", logs
    # The driver streamed the child's output and reported its end.
    assert "records train=5 val=2" in logs
    children = [
        j for j in client.list_jobs() if (j.metadata or {}).get("gymray.parent_job") == parent
    ]
    assert len(children) == 1
    child = children[0]
    assert child.status.value == "SUCCEEDED"
    assert child.submission_id.startswith("gymray-dpo-")
    assert f"job {child.submission_id} SUCCEEDED" in logs
    meta = child.metadata
    assert meta["gymray.dataset"] == str(tmp_path / "ds")
    assert meta["gymray.fingerprint"] == manifest["fingerprint"]
    assert meta["gymray.config"].startswith(str(tmp_path / "ds" / "runs"))
    assert child.runtime_env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    seen = json.loads(report.read_text())
    assert seen["cwd"] == str(checkout)
    assert seen["script"] == "examples/run_dpo.py"
    assert seen["records"] == {"train": 5, "val": 2}
    assert seen["override_env"] == "1"
    assert seen["config"]["dpo"]["max_num_steps"] == 3
    assert seen["config"]["data"]["train"]["dataset_name"] == "PreferenceDataset"


def test_rerunning_the_same_step_attaches_to_the_same_job(
    client, client_env, checkout, tmp_path, capsys
):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    job = settings(client_env, checkout, metadata={"team": "rl"})
    first = jobs.submit_training("sft", manifest, job, {"policy": {"model_name": "a/b"}})
    assert first.wait() == "SUCCEEDED"
    before = job_ids(client)
    second = jobs.submit_training("sft", manifest, job, ["policy.model_name=a/b"])
    assert second.attached and second.submission_id == first.submission_id
    assert job_ids(client) == before
    assert cli.follow(second) == errors.EXIT_OK
    assert "already exists (SUCCEEDED)" in capsys.readouterr().err
    # A different config is a different job.
    other = jobs.submit_training("sft", manifest, job, dry_run=True)
    assert other.submission_id != first.submission_id
    assert client.get_job_info(first.submission_id).metadata["team"] == "rl"


def test_secret_env_values_never_appear_in_what_gymray_prints_or_writes(
    client, client_env, checkout, tmp_path, capsys
):
    secret = f"sk-{secrets.token_hex(12)}"
    manifest = write_dataset(tmp_path / "ds", "dpo", "binary")
    report = tmp_path / "report.json"
    job = settings(client_env, checkout, env_vars={"GYMRAY_TEST_SECRET": secret})
    overrides = {"++standin": {"print_env": "GYMRAY_TEST_SECRET", "report": str(report)}}

    dry = jobs.submit_training("dpo", manifest, job, overrides, dry_run=True)
    assert cli.follow(dry) == 0
    assert cli.follow(dry, json_output=True) == 0

    handle = jobs.submit_training("dpo", manifest, job, overrides)
    assert cli.follow(handle, json_output=True) == errors.EXIT_OK
    printed = capsys.readouterr()
    # The job did get the value, and printed it: gymray relayed it redacted.
    seen = json.loads(report.read_text())
    assert seen["env_sha256"]["GYMRAY_TEST_SECRET"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret in jobs.connect(client_env.address).get_job_logs(handle.submission_id)
    assert "GYMRAY_TEST_SECRET=<redacted>" in printed.err
    assert "GYMRAY_TEST_SECRET=<redacted>" in handle.logs()
    places = {
        "stdout": printed.out,
        "stderr": printed.err,
        "logs": handle.logs(),
        "summary": json.dumps(handle.summary(include_config=True)),
        "metadata": json.dumps(client.get_job_info(handle.submission_id).metadata),
        "manifest": (tmp_path / "ds" / "manifest.json").read_text(),
        "settings": JobSettings.model_validate(job).model_dump_json(),
    }
    for path in (tmp_path / "ds").rglob("*.yaml"):
        places[str(path)] = path.read_text()
    assert len(places) >= 10  # both YAMLs of the run and the dataset's copy
    leaks = [name for name, text in places.items() if secret in text]
    assert not leaks
    env_shown = handle.summary()["runtime_env"]["env_vars"]
    assert env_shown["GYMRAY_TEST_SECRET"] == "<redacted>"
    assert env_shown["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"


def test_secrets_in_an_env_file_stay_out_of_rays_job_metadata(
    client, client_env, checkout, tmp_path, capsys
):
    """job.env_vars travel in the runtime_env, which `ray job list` shows; job.env_file
    is read by the job on the cluster: the job gets the value, Ray's records do not."""
    secret = f"sk-{secrets.token_hex(12)}"
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"GYMRAY_TEST_SECRET={secret}\n")
    manifest = write_dataset(tmp_path / "ds", "sft", "simple")
    report = tmp_path / "report.json"
    job = settings(client_env, checkout, env_file=str(env_file))
    overrides = {"++standin": {"print_env": "GYMRAY_TEST_SECRET", "report": str(report)}}
    handle = jobs.submit_training("sft", manifest, job, overrides)
    assert cli.follow(handle) == errors.EXIT_OK
    seen = json.loads(report.read_text())
    assert seen["env_sha256"]["GYMRAY_TEST_SECRET"] == hashlib.sha256(secret.encode()).hexdigest()
    printed = capsys.readouterr()
    assert "GYMRAY_TEST_SECRET=<redacted>" in printed.out  # relayed logs, redacted
    info = client.get_job_info(handle.submission_id)
    listed = [j for j in client.list_jobs() if j.submission_id == handle.submission_id]
    exposed = json.dumps([info.entrypoint, info.metadata, info.runtime_env,
                          [j.runtime_env for j in listed], [j.metadata for j in listed]])  # fmt: skip
    assert secret not in exposed and str(env_file) in info.entrypoint
    # env_vars would be exposed, and gymray says so
    loud = jobs.submit_training("sft", manifest, settings(
        client_env, checkout, env_vars={"GYMRAY_TEST_SECRET": secret}), overrides, dry_run=True)  # fmt: skip
    assert any("job.env_file" in w for w in loud.warnings)


def test_bad_override_key_fails_before_anything_is_submitted(
    client, client_env, checkout, tmp_path
):
    manifest = write_dataset(tmp_path / "ds", "sft", "openai")
    before = job_ids(client)
    with pytest.raises(ConfigError, match="did you mean nemo_rl.policy.model_name"):
        jobs.submit_training(
            "sft", manifest, settings(client_env, checkout), {"policy": {"model_nme": "x"}}
        )
    assert job_ids(client) == before
    assert not (tmp_path / "ds" / "runs").exists()


def test_dry_run_writes_and_prints_the_config_and_submits_nothing(
    client, client_env, checkout, tmp_path, capsys
):
    manifest = write_dataset(tmp_path / "ds", "grpo", "nemo_gym")
    before = job_ids(client)
    handle = jobs.submit_training(
        "grpo", manifest, settings(client_env, checkout), ["policy.model_name=q/w"], dry_run=True
    )
    assert handle.status() == "DRY_RUN"
    assert cli.follow(handle, json_output=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "dry-run" and out["ok"] and out["exit_code"] == 0
    summary = out["job"]
    assert summary["entrypoint"].endswith(f"--config {handle.config_path}")
    assert "examples/nemo_gym/run_grpo_nemo_gym.py" in summary["entrypoint"]
    assert "should_use_nemo_gym: true" in summary["config_yaml"]
    assert "model_name: q/w" in summary["config_yaml"]
    assert cli.follow(handle) == 0
    text = capsys.readouterr().out
    assert "dry run: the config files below were written; no job was submitted" in text
    assert handle.submission_id in text and handle.config_path in text
    assert job_ids(client) == before
    # the exact files it would launch with, loadable the way NeMo RL loads them
    written = OmegaConf.load(handle.config_path)
    assert written.policy.model_name == "q/w" and written.defaults == handle.config.base_path
    assert (tmp_path / "ds" / "nemo_rl.yaml").read_text() == handle.config.config_yaml


PREPARE_DRIVER = """
import json, sys
from gymray import cli, jobs
from gymray.api import prepare
src, out, job, overrides = sys.argv[1], sys.argv[2], *(json.loads(a) for a in sys.argv[3:5])
prepare("sft", input=src, output=out)
manifest = json.load(open(out + "/manifest.json"))
sys.exit(cli.follow(jobs.submit_training("sft", manifest, job, overrides)))
"""


def test_end_to_end_prepare_and_train_inside_one_driver_job(client, checkout, tmp_path):
    out = tmp_path / "ds"
    report = tmp_path / "report.json"
    job = {"nemo_rl_dir": str(checkout), "launcher": shlex.quote(sys.executable)}
    overrides = {"++standin": {"report": str(report)}}
    gym_tree(tmp_path / "gym")  # a directory of NeMo Gym rollouts, as a collection leaves it
    argv = [sys.executable, "-c", PREPARE_DRIVER, str(tmp_path / "gym"), str(out)]
    parent = client.submit_job(
        entrypoint=shlex.join([*argv, json.dumps(job), json.dumps(overrides)]),
        entrypoint_num_cpus=1,
        submission_id=f"driver-e2e-{secrets.token_hex(4)}",
    )
    status = wait_status(client, parent, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=150)
    logs = client.get_job_logs(parent)
    assert status == "SUCCEEDED", logs[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    seen = json.loads(report.read_text())
    # The stand-in read every record prepare wrote, through the config gymray wrote.
    assert seen["records"] == {
        "train": manifest["counts"]["records"]["train"],
        "val": manifest["counts"]["records"]["val"] or None,
    }
    assert seen["records"]["train"] > 0
    assert seen["config"]["data"]["train"]["dataset_name"] == "openai_format"
    children = [
        j for j in client.list_jobs() if (j.metadata or {}).get("gymray.parent_job") == parent
    ]
    assert [c.status.value for c in children] == ["SUCCEEDED"]
    assert children[0].metadata["gymray.fingerprint"] == manifest["fingerprint"]


def test_cli_ray_job_submit_runs_prepare_then_training_as_child(client, checkout, tmp_path):
    # NEEDS CLI WIRING: `python -m gymray.run sft ... job.*=... nemo_rl.*=...` as a driver job.
    out = tmp_path / "ds"
    report = tmp_path / "report.json"
    gym_tree(tmp_path / "gym")
    entrypoint = shlex.join(
        [
            sys.executable,
            "-m",
            "gymray.run",
            "sft",
            f"input={tmp_path / 'gym'}",
            f"output={out}",
            f"job.nemo_rl_dir={checkout}",
            f"job.launcher={sys.executable}",
            f"nemo_rl.++standin.report={report}",
        ]
    )
    parent = client.submit_job(
        entrypoint=entrypoint,
        entrypoint_num_cpus=1,
        submission_id=f"driver-cli-{secrets.token_hex(4)}",
    )
    status = wait_status(client, parent, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=150)
    logs = client.get_job_logs(parent)
    assert status == "SUCCEEDED", logs[-3000:]
    assert json.loads(report.read_text())["records"]["train"] > 0
    assert "SUCCEEDED" in logs


def test_shipped_job_specs_render_and_submit_py_quotes_values(client_env, tmp_path):
    specs = sorted((REPO / "jobs").glob("*.json"))
    assert [p.stem for p in specs] == ["dpo", "grpo", "sft"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "RAY_AUTH_TOKEN": client_env.token,
        "GYMRAY_INPUT": "s3://b/roll outs/",
        "GYMRAY_OUTPUT": "/shared/ds;x",
        "NEMO_RL_DIR": "/shared/nemo-rl",
    }
    render = (
        "import json, sys; sys.path.insert(0, 'jobs'); from submit import render; "
        "print(json.dumps(render(json.load(open(sys.argv[1])), ['nemo_rl.a=1 2'])))"
    )
    for spec in specs:
        proc = subprocess.run(
            [sys.executable, "-c", render, str(spec)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        req = json.loads(proc.stdout)
        argv = shlex.split(req["entrypoint"])
        assert argv[:4] == ["python", "-m", "gymray.run", spec.stem]
        assert "input=s3://b/roll outs/" in argv and "output=/shared/ds;x" in argv
        assert argv[-1] == "nemo_rl.a=1 2" and "nemo_rl.policy.model_name=Qwen/Qwen2.5-1.5B" in argv
        assert req["runtime_env"]["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    # submit.py against the real head: values reach the job intact, exit code is the job's.
    spec = tmp_path / "echo.json"
    spec.write_text(
        json.dumps(
            {
                "entrypoint": f"{shlex.quote(sys.executable)} -c 'import sys; print(sys.argv[1:]); "
                "sys.exit(len(sys.argv) - 3)' ${GYMRAY_INPUT} ${GYMRAY_OUTPUT}",
                "entrypoint_num_cpus": 0.5,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "jobs/submit.py", str(spec), "--address", client_env.address, "--follow"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert "['s3://b/roll outs/', '/shared/ds;x']" in proc.stdout
