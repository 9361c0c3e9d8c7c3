"""gymray.jobs against a real Ray head with token auth (no mocks of Ray).

The head is started once per session with `ray start --head` on loopback, its own temp
dir and free ports, and stopped by killing exactly the processes it started. The NeMo RL
checkout is the stand-in from nemo_rl_standin; datasets are written by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from nemo_rl_standin import make_checkout, write_dataset  # noqa: E402
from support import FIXTURES  # noqa: E402

from gymray import cli, errors, jobs  # noqa: E402
from gymray.config import JobSettings  # noqa: E402
from gymray.errors import ConfigError  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str
    token: str
    env: dict
    gcs: str


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) from /proc (psutil is not a gymray dependency)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmd)
    return table


def _head_processes(temp_dir: str, gcs: str) -> set[int]:
    """The processes of the head this session started, and their descendants."""
    table = _proc_table()
    pids = {
        pid
        for pid, (_, cmd) in table.items()
        if temp_dir in cmd or f"--address={gcs}" in cmd or f"--gcs-address={gcs}" in cmd
    }
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
        pids |= more
        grew = bool(more)
    pids.discard(os.getpid())
    return pids


def _kill(pids: set[int], grace_s: float = 3.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)}
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


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


def settings(head: Head, checkout: Path, **kw) -> dict:
    return {
        "nemo_rl_dir": str(checkout),
        "launcher": shlex.quote(sys.executable),
        "address": head.address,
        **kw,
    }


def job_ids(client) -> set[str]:
    return {j.submission_id for j in client.list_jobs()}


def wait_status(client, sid: str, want: set[str], timeout: float = TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = client.get_job_status(sid).value
        except RuntimeError:
            status = None
        if status in want:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {sid} not in {want} after {timeout}s (last {status})")


DRIVER = """
import json, sys
from gymray import cli, jobs
from gymray.errors import GymrayError
algo, manifest, job, overrides = sys.argv[1], *(json.loads(a) for a in sys.argv[2:5])
try:
    handle = jobs.submit_training(algo, manifest, job, overrides)
except GymrayError as e:
    print(f"gymray: error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
sys.exit(cli.follow(handle))
"""


def driver_argv(algo: str, manifest: dict, job: dict, overrides) -> list[str]:
    return [
        sys.executable,
        "-c",
        DRIVER,
        algo,
        json.dumps(manifest),
        json.dumps(job),
        json.dumps(overrides),
    ]


# ---------------------------------------------------------------------------------------


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
    assert cli.main(["stop", handle.submission_id, "--address", client_env.address]) == 0
    assert f"job {handle.submission_id} STOPPED" in capsys.readouterr().err
    assert handle.status() == "STOPPED" and handle.exit_code() == errors.EXIT_STOPPED
    assert cli.main(["logs", handle.submission_id, "--address", client_env.address]) == 0
    assert "mode=sleep" in capsys.readouterr().out
    assert cli.main(["status", handle.submission_id, "--address", client_env.address]) == 3
    assert cli.main(["frobnicate", "x"]) == errors.EXIT_USAGE


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
    argv = [sys.executable, "-c", PREPARE_DRIVER, str(FIXTURES), str(out)]
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
    entrypoint = shlex.join(
        [
            sys.executable,
            "-m",
            "gymray.run",
            "sft",
            f"input={FIXTURES}",
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
