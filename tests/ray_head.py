"""A real Ray head with token auth for the job tests, and helpers to talk to it.

The head is started with `ray start --head` on loopback, its own temp dir and free
ports, and stopped by killing exactly the processes it started (the session fixture
``head`` in tests/jobs/conftest.py)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


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


def proc_table() -> dict[int, tuple[int, str]]:
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


def descendants(pids: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """``pids`` and every process below them in ``table``."""
    pids = set(pids)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
        pids |= more
        grew = bool(more)
    return pids


def _head_processes(temp_dir: str, gcs: str) -> set[int]:
    """The processes of the head this session started, and their descendants."""
    table = proc_table()
    started = {
        pid
        for pid, (_, cmd) in table.items()
        if temp_dir in cmd or f"--address={gcs}" in cmd or f"--gcs-address={gcs}" in cmd
    }
    pids = descendants(started, table)
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
        pids = {p for p in pids if os.path.exists(f"/proc/{p}") and not zombie(p)}
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


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


def run_prepare_job(client, argv: list[str], name: str) -> tuple[str, str]:
    """Submit ``argv`` as a Ray Job, as users do; its submission id and logs once it
    succeeded."""
    sid = client.submit_job(entrypoint=shlex.join(argv), entrypoint_num_cpus=0.5,
                            submission_id=f"{name}-{secrets.token_hex(4)}")  # fmt: skip
    status = wait_status(client, sid, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=150)
    logs = client.get_job_logs(sid)
    assert status == "SUCCEEDED", logs[-3000:]
    return sid, logs


def job_tasks(client, head: Head, sid: str) -> list:
    """Every task of job ``sid`` in Ray's state API, once none is still running
    (workers send their tasks' events once a second)."""
    # imported here: conftest imports this module for every session, and only two
    # tests ask the state API
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    job_id = client.get_job_info(sid).job_id
    state = StateApiClient(head.address, headers={"Authorization": f"Bearer {head.token}"})
    options = ListApiOptions(limit=10000, detail=True, filters=[("job_id", "=", job_id)])
    deadline = time.monotonic() + 30
    while True:
        tasks = state.list(StateResource.TASKS, options=options, raise_on_missing_output=False)
        if {t.state for t in tasks} <= {"FINISHED", "FAILED"} or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


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
