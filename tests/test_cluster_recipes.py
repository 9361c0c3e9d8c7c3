"""The cluster recipes (cluster/, jobs/) without Slurm or Kubernetes.

- The KubeRay manifests: token auth through the operator (`spec.authOptions`), a Ray
  version that KubeRay accepts for it and that is the Ray gymray is tested with.
- The shell scripts parse (`bash -n`).
- slurm-gymray.sbatch's readiness wait against real HTTP servers on loopback (late,
  never, rejecting the token, reporting a dead node), and the whole script with stand-ins
  for `srun`, `scontrol` and Python: a "head" that serves the Ray state API only after a
  delay, a "worker" that joins (or dies), and a "gymray" that records how it was started
  and exits with a chosen code. What the stand-ins answer mirrors Ray 2.56.1's replies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml  # PyYAML: omegaconf's own dependency; OmegaConf.load reads one document only

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
SBATCH = CLUSTER / "slurm-gymray.sbatch"
RAYCLUSTER = CLUSTER / "kuberay-raycluster.yaml"
RAYJOB = REPO / "jobs" / "kuberay-rayjob.yaml"
KUBERAY_MIN_TOKEN_RAY = (2, 52, 0)  # KubeRay refuses authOptions.mode=token below this

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def ray_pin() -> str:
    """The Ray version gymray is tested with (and NeMo RL locks)."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if m := re.fullmatch(r"ray==(\S+)", line.strip()):
            return m.group(1)
    raise AssertionError("constraints.txt pins no ray version")


def manifests(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def containers(pod_template: dict) -> list[dict]:
    spec = pod_template.get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def auth_env(container: dict) -> list[str]:
    return [e["name"] for e in container.get("env") or [] if e["name"].startswith("RAY_AUTH")]


# ------------------------------------------------------------------ KubeRay manifests


def test_raycluster_has_operator_token_auth_on_the_tested_ray():
    cluster = manifests(RAYCLUSTER)["RayCluster"]
    spec = cluster["spec"]
    assert spec["authOptions"]["mode"] == "token"
    assert version(spec["rayVersion"]) >= KUBERAY_MIN_TOKEN_RAY
    assert spec["rayVersion"] == ray_pin()
    templates = [spec["headGroupSpec"]["template"]]
    templates += [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        for c in containers(template):
            # The operator injects RAY_AUTH_MODE and RAY_AUTH_TOKEN (from the Secret it
            # creates); hand-set ones would shadow or duplicate them.
            assert auth_env(c) == [], c["name"]


def test_rayjob_runs_on_the_token_cluster_and_leaves_the_token_to_the_operator():
    cluster = manifests(RAYCLUSTER)["RayCluster"]
    job = manifests(RAYJOB)["RayJob"]
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    # RayJobSpec has no authOptions: with clusterSelector the operator takes the selected
    # cluster's and gives its token to the submitter pod.
    assert "authOptions" not in spec
    assert "rayClusterSpec" not in spec
    for c in containers(spec.get("submitterPodTemplate", {})):
        assert auth_env(c) == [], c["name"]
        assert c["image"].split(":")[-1].startswith(ray_pin()), c["image"]
    assert spec["entrypoint"].startswith("python -m gymray.run ")
    assert "RAY_OVERRIDE_JOB_RUNTIME_ENV" in yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]


def test_docs_name_the_secret_kuberay_creates():
    # The operator's Secret is named after the cluster, key auth_token.
    name = manifests(RAYCLUSTER)["RayCluster"]["metadata"]["name"]
    readme = (CLUSTER / "README.md").read_text()
    assert f"kubectl get secret {name} -o jsonpath='{{.data.auth_token}}'" in readme
    for path in (RAYCLUSTER, RAYJOB):
        assert "kubectl create secret" not in path.read_text(), path.name


@pytest.mark.parametrize(
    "script", sorted([*CLUSTER.glob("*.sh"), *CLUSTER.glob("*.sbatch")]), ids=lambda p: p.name
)
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ stand-ins

# Stand-in for `$PYTHON` on the nodes: `-m ray.scripts.scripts start --head` serves the
# state API's node list (after FAKE_HEAD_DELAY s; nodes = itself + joined workers, plus
# FAKE_DEAD dead ones, which Ray counts in "total" but not in "num_filtered");
# `start --address=` joins after FAKE_WORKER_DELAY s (or dies: FAKE_WORKER=die);
# `-m gymray.run` records its argv and environment and exits with FAKE_GYMRAY_RC.
FAKE_PYTHON = textwrap.dedent(
    """
    import http.server, json, os, signal, sys, time
    from pathlib import Path

    state = Path(os.environ["FAKE_STATE"])
    argv = sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))


    def record(name):
        keys = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
        (state / f"{name}.json").write_text(json.dumps({
            "argv": argv, "pid": os.getpid(), "t": time.time(),
            "env": {k: os.environ.get(k) for k in keys},
            "token": os.environ.get("RAY_AUTH_TOKEN"),
        }))


    def opt(name):
        return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


    class Nodes(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            token = os.environ.get("FAKE_TOKEN") or os.environ.get("RAY_AUTH_TOKEN")
            auth = self.headers.get("Authorization")
            if auth != f"Bearer {token}":
                return self.reply(401 if auth is None else 403, {"result": False})
            if not self.path.startswith("/api/v0/nodes?") or "filter_values=ALIVE" not in self.path:
                return self.reply(404, {"result": False})
            alive = 1 + len(list((state / "workers").iterdir()))
            dead = int(os.environ.get("FAKE_DEAD", "0"))
            rows = [{"node_id": str(i), "state": "ALIVE"} for i in range(alive)]
            self.reply(200, {"result": True, "msg": "", "data": {"result": {
                "total": alive + dead, "num_after_truncation": alive,
                "num_filtered": alive, "result": rows}}})

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass


    if argv[:2] == ["-m", "gymray.run"]:
        record("driver")
        sys.exit(int(os.environ.get("FAKE_GYMRAY_RC", "0")))
    assert argv[:3] == ["-m", "ray.scripts.scripts", "start"], argv
    (state / "workers").mkdir(exist_ok=True)
    if "--head" in argv:
        time.sleep(float(os.environ.get("FAKE_HEAD_DELAY", "0")))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", int(opt("dashboard-port"))), Nodes)
        record("head")
        server.serve_forever()
    if os.environ.get("FAKE_WORKER") == "die":
        sys.exit("worker: cannot reach the head")
    time.sleep(float(os.environ.get("FAKE_WORKER_DELAY", "0")))
    (state / "workers" / str(os.getpid())).touch()
    record("worker")
    while True:
        time.sleep(60)
    """
)

# Stand-in for srun: logs its argv (one JSON list per line), drops its options, runs the
# command here. The script passes every srun option as --name or --name=value.
FAKE_SRUN = textwrap.dedent(
    """
    import json, os, sys

    args = sys.argv[1:]
    with open(os.path.join(os.environ["FAKE_STATE"], "srun.log"), "a") as f:
        f.write(json.dumps(args) + "\\n")
    while args and args[0].startswith("-"):
        args.pop(0)
    os.execvp(args[0], args)
    """
)

FAKE_SCONTROL = (
    '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && printf "%s\\n" $FAKE_NODES\n'
)


# What slurm-gymray.sbatch reads from the environment besides RAY_* and SLURM_*.
SCRIPT_SETTINGS = {
    "CONTAINER",
    "MOUNTS",
    "SETUP_COMMAND",
    "PYTHON",
    "HEAD_IP",
    "GPUS_PER_NODE",
    "DASHBOARD_PORT",
    "READY_TIMEOUT",
    "TOKEN_FILE",
    "POLL_INTERVAL",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_exe(path: Path, text: str, python: bool = True) -> Path:
    path.write_text((f"#!{sys.executable}\n" if python else "") + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def stage(tmp_path):
    """A bin dir with the stand-ins, a state dir, and a clean environment for them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    python = write_exe(bin_dir / "fake-python", FAKE_PYTHON)
    write_exe(bin_dir / "srun", FAKE_SRUN)
    write_exe(bin_dir / "scontrol", FAKE_SCONTROL, python=False)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "SLURM_")) and k not in SCRIPT_SETTINGS
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path / "home"),
        FAKE_STATE=str(state),
        POLL_INTERVAL="0.2",
    )
    yield {"python": python, "state": state, "env": env, "tmp": tmp_path}
    # Whatever a failed test left running: only the stand-ins it started.
    for rec in state.glob("*.json"):
        try:
            os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def start_head(stage, port: int, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(stage["python"]),
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            f"--dashboard-port={port}",
            "--block",
        ],
        env={**stage["env"], **env},
    )


def wait_for_ray(stage, url: str, nodes: int, timeout: int, *pids: int, **env):
    # Sourced (not run: $0 is not the script), so only the functions are defined.
    cmd = 'source "$1"; shift; wait_for_ray "$@"'
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", "-c", cmd, "wait", str(SBATCH), url, str(nodes), str(timeout), *map(str, pids)],
        env={**stage["env"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r, time.monotonic() - t0


# ------------------------------------------------------------------ the readiness wait


@needs_curl
def test_wait_for_ray_waits_for_a_head_that_answers_late(stage):
    port = free_port()
    head = start_head(stage, port, RAY_AUTH_TOKEN="t0k", FAKE_HEAD_DELAY="1.5")
    try:
        r, took = wait_for_ray(stage, f"http://127.0.0.1:{port}", 1, 20, RAY_AUTH_TOKEN="t0k")
    finally:
        head.kill()
        head.wait()
    assert r.returncode == 0, r.stderr
    assert took >= 1.0
    assert "Ray is up: 1 of 1 node(s) alive" in r.stderr


@needs_curl
def test_wait_for_ray_times_out_with_a_clear_error_when_nothing_answers(stage):
    port = free_port()
    r, took = wait_for_ray(stage, f"http://127.0.0.1:{port}", 1, 1, RAY_AUTH_TOKEN="t0k")
    assert r.returncode == 1
    assert 1.0 <= took < 10
    assert r.stderr.strip().splitlines()[-1] == (
        f"gymray-sbatch: error: no answer from the Ray job API at http://127.0.0.1:{port} after 1 s"
    )


@needs_curl
def test_wait_for_ray_counts_alive_nodes_not_dead_ones(stage):
    port = free_port()
    head = start_head(stage, port, RAY_AUTH_TOKEN="t0k", FAKE_DEAD="1")
    try:
        r, _ = wait_for_ray(stage, f"http://127.0.0.1:{port}", 2, 1, RAY_AUTH_TOKEN="t0k")
    finally:
        head.kill()
        head.wait()
    assert r.returncode == 1
    assert "error: only 1 of 2 Ray node(s) alive after 1 s" in r.stderr


@needs_curl
def test_wait_for_ray_stops_at_once_on_a_rejected_token(stage):
    port = free_port()
    head = start_head(stage, port, FAKE_TOKEN="right")
    try:
        r, took = wait_for_ray(stage, f"http://127.0.0.1:{port}", 1, 30, RAY_AUTH_TOKEN="wrong")
    finally:
        head.kill()
        head.wait()
    assert r.returncode == 1
    assert took < 10
    assert "rejected the auth token (HTTP 403)" in r.stderr


@needs_curl
def test_wait_for_ray_stops_at_once_when_a_ray_step_has_exited(stage):
    gone = subprocess.Popen(["true"])
    gone.wait()
    r, took = wait_for_ray(stage, f"http://127.0.0.1:{free_port()}", 1, 30, gone.pid)
    assert r.returncode == 1
    assert took < 10
    assert f"a Ray step (srun pid {gone.pid}) exited before 1 node(s) joined" in r.stderr


# ------------------------------------------------------------------ the whole sbatch script


def run_sbatch(stage, *args: str, **env) -> subprocess.CompletedProcess:
    ray_port, dash_port = free_port(), free_port()
    stage["ports"] = (ray_port, dash_port)
    full_env = {
        **stage["env"],
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_SUBMIT_DIR": str(stage["tmp"]),
        "SLURM_CPUS_ON_NODE": "16",
        "FAKE_NODES": "node1 node2",
        "PYTHON": str(stage["python"]),
        "HEAD_IP": "127.0.0.1",
        "RAY_PORT": str(ray_port),
        "DASHBOARD_PORT": str(dash_port),
        "GPUS_PER_NODE": "8",
        "READY_TIMEOUT": "20",
        **env,
    }
    return subprocess.run(
        ["bash", str(SBATCH), *args], env=full_env, capture_output=True, text=True, timeout=60
    )


def srun_calls(stage) -> list[list[str]]:
    return [json.loads(line) for line in (stage["state"] / "srun.log").read_text().splitlines()]


def record(stage, name: str) -> dict:
    return json.loads((stage["state"] / f"{name}.json").read_text())


def gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@needs_curl
def test_sbatch_waits_for_head_and_workers_then_exits_with_gymrays_code(stage):
    r = run_sbatch(
        stage,
        "dpo",
        "input=/data/rollouts",
        "output=/data/ds",
        FAKE_HEAD_DELAY="1",
        FAKE_WORKER_DELAY="0.5",
        FAKE_GYMRAY_RC="3",
    )
    assert r.returncode == 3, r.stderr
    ray_port, _ = stage["ports"]
    head, worker, driver = (record(stage, n) for n in ("head", "worker", "driver"))
    # Workers start once the head answers; gymray once both nodes are alive.
    assert head["t"] <= worker["t"] <= driver["t"]
    assert "error" not in r.stderr
    assert f"--address=127.0.0.1:{ray_port}" in worker["argv"]
    assert driver["argv"] == [
        "-m",
        "gymray.run",
        "dpo",
        "input=/data/rollouts",
        "output=/data/ds",
        "nemo_rl.cluster.num_nodes=2",
        "nemo_rl.cluster.gpus_per_node=8",
    ]
    # gymray joins through the GCS address (Ray Data and the job API), with token auth.
    assert driver["env"] == {
        "RAY_ADDRESS": f"127.0.0.1:{ray_port}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": None,
    }
    token = head["token"]
    assert token and token == worker["token"] == driver["token"]
    # The token reaches the steps through the environment, never a command line or the log.
    assert token not in (stage["state"] / "srun.log").read_text()
    assert token not in r.stdout + r.stderr
    calls = srun_calls(stage)
    assert not any(a.startswith("--container") for call in calls for a in call)
    assert "--overlap" in calls[-1]  # gymray runs next to the head step
    # The token file is gone and the Ray steps were stopped when the script ended.
    assert not (stage["tmp"] / "home" / ".ray" / "auth_token.4242").exists()
    assert gone(head["pid"]) and gone(worker["pid"])


@needs_curl
def test_sbatch_runs_every_step_in_the_container_after_setup_command(stage):
    r = run_sbatch(
        stage,
        "sft",
        "input=/data/r",
        "output=/data/ds",
        "nemo_rl.cluster.num_nodes=1",
        CONTAINER="nvcr.io/nvidia/nemo-rl:test",
        MOUNTS="/data:/data",
        SETUP_COMMAND='echo "setup $$" >> "$FAKE_STATE/setup.log"',
    )
    assert r.returncode == 0, r.stderr
    python_calls = [c for c in srun_calls(stage) if str(stage["python"]) in c]
    assert len(python_calls) == 3  # head, workers, gymray
    for call in python_calls:
        assert "--container-image=nvcr.io/nvidia/nemo-rl:test" in call
        assert "--container-mounts=/data:/data" in call
        assert f"--container-workdir={stage['tmp']}" in call
        assert "--container-name=gymray-4242" in call
    # SETUP_COMMAND ran once per Ray node (head and worker), before Ray started there.
    assert len((stage["state"] / "setup.log").read_text().splitlines()) == 2
    # A num_nodes the user gave wins over the allocation's.
    argv = record(stage, "driver")["argv"]
    assert [a for a in argv if "num_nodes" in a] == ["nemo_rl.cluster.num_nodes=1"]


@needs_curl
def test_sbatch_fails_fast_when_a_worker_dies_and_never_starts_gymray(stage):
    t0 = time.monotonic()
    r = run_sbatch(stage, "dpo", "input=/x", "output=/y", FAKE_WORKER="die")
    assert r.returncode == 1
    assert time.monotonic() - t0 < 15  # well before READY_TIMEOUT
    assert "exited before 2 node(s) joined" in r.stderr
    assert not (stage["state"] / "driver.json").exists()
    assert gone(record(stage, "head")["pid"])


def test_sbatch_without_arguments_prints_usage(stage):
    r = run_sbatch(stage)
    assert r.returncode == 2
    assert "usage: sbatch" in r.stderr
