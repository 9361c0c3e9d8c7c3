"""How ``python -m gymray.run`` leaves a cluster it joined, on the session's real head
(tests/jobs/conftest.py): at once, once Ray's driver has let go, and with nothing lost
that Ray records of the run (its tasks' states, the driver's exit)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

from ray.util.state.api import StateApiClient
from ray.util.state.common import ListApiOptions, StateResource
from ray_head import TIMEOUT_S, job_tasks, run_prepare_job

from gymray.samples.gym_shapes import gym_tree


def joined_run(client_env, script: str) -> subprocess.CompletedProcess:
    """``script`` run by a fresh Python that joins the session's head."""
    env = {**client_env.env, "RAY_ADDRESS": client_env.gcs}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)  # fmt: skip


LEAVE = """
import os, sys, ray
from gymray import cluster
cluster.ensure_ray()
ray.get([ray.remote(lambda i: i).remote(i) for i in range(4)])
quick = cluster.disconnect()
print("quick" if quick else "waited", ray.is_initialized(), flush=True)
os._exit(0) if quick else sys.exit(0)
"""


def test_leaving_a_joined_cluster_returns_once_rays_driver_has_let_go(client_env):
    """``ray.shutdown()`` spends 0.25 s of every run, after the driver has told the raylet
    it is leaving and sent its tasks' events: Ray's gRPC client waits out a 250 ms poll
    before its last thread ends. Ray 2.56's thread names show when only that is left, and
    ``cluster.disconnect`` returns then (a CLI run then exits at once)."""
    run = joined_run(client_env, LEAVE)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["quick", "False"], run.stdout + run.stderr[-3000:]


INTERRUPTED = """
import threading, ray
from gymray import cluster
cluster.ensure_ray()
ray.get(ray.remote(lambda: 1).remote())
calls, real = [], cluster._thread_names
def names():  # Ctrl-C while Ray's shutdown runs in its thread
    calls.append(1)
    if len(calls) == 2:
        raise KeyboardInterrupt
    return real()
cluster._thread_names = names
try:
    cluster.disconnect()
except KeyboardInterrupt:
    alive = [t.name for t in threading.enumerate() if t.name == "gymray-ray-shutdown"]
    print("interrupted", alive or "done")
"""


def test_a_signal_while_leaving_lets_rays_shutdown_end_first(client_env):
    """Ctrl-C (or SIGTERM made an exception) while ``cluster.disconnect`` waits: the
    exception goes on once Ray's shutdown has ended, never with it still tearing the
    driver down while the interpreter exits."""
    run = joined_run(client_env, INTERRUPTED)
    assert run.stdout.split() == ["interrupted", "done"], run.stdout + run.stderr[-3000:]


OTHER_IO = """
import collections, os, ray
from gymray import cluster
cluster.ensure_ray()
drivers = set()  # the driver's IO threads, as it joined
for t in os.listdir("/proc/self/task"):
    try:
        if open(f"/proc/self/task/{t}/comm").read().strip() == "worker.io":
            drivers.add(t)
    except FileNotFoundError:  # ended meanwhile
        pass
ray.get(ray.remote(lambda: 1).remote())
calls = []
def names():  # another worker.io thread ends first; the driver's is still seen running
    calls.append(1)
    seen = collections.defaultdict(set, {"worker.io": set(drivers)})
    if len(calls) == 1:
        seen["task_event_buff"].add("1")
        seen["worker.io"].add("other")
    return seen
cluster._thread_names = names
print("quick" if cluster.disconnect() else "waited", bool(drivers), flush=True)
"""


def test_only_the_drivers_own_io_thread_ending_ends_the_wait(client_env):
    """Another thread named ``worker.io`` (Ray's, or anyone's) that ends first is not
    the driver's IO thread ending: while the one the driver had when it joined is seen,
    ``cluster.disconnect`` waits (here: for all of ``ray.shutdown()``)."""
    run = joined_run(client_env, OTHER_IO)
    assert run.stdout.split() == ["waited", "True"], run.stdout + run.stderr[-3000:]


UNREADABLE = """
import errno, os, threading, ray
from gymray import cluster
cluster.ensure_ray()
ray.get(ray.remote(lambda: 1).remote())
calls, real = [], os.listdir
def listdir(path="."):  # /proc unreadable once Ray's shutdown has begun (e.g. EMFILE)
    if path == "/proc/self/task":
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.EMFILE, "Too many open files")
    return real(path)
os.listdir = listdir
quick = cluster.disconnect()
alive = [t.name for t in threading.enumerate() if t.name == "gymray-ray-shutdown"]
print("quick" if quick else "waited", alive or "done", flush=True)
os._exit(0)
"""


def test_threads_that_cannot_be_read_are_not_taken_for_gone(client_env):
    """Only threads seen to have ended let ``cluster.disconnect`` return early: where
    ``/proc`` cannot be read meanwhile, it waits for all of ``ray.shutdown()``."""
    run = joined_run(client_env, UNREADABLE)
    assert run.stdout.split() == ["waited", "done"], run.stdout + run.stderr[-3000:]


def test_a_run_whose_stdout_is_closed_exits_with_its_code(client_env, tmp_path):
    """The quick exit flushes what is left: a closed stdout (``>&-``: ``sys.stdout`` is
    None) is nothing to flush, not a traceback and exit 1 after the dataset is written."""
    gym_tree(tmp_path / "gym")
    argv = [sys.executable, "-m", "gymray.run", "sft", "--prepare-only",
            f"input={tmp_path / 'gym'}", f"output={tmp_path / 'ds'}"]  # fmt: skip
    env = {**client_env.env, "RAY_ADDRESS": client_env.gcs}
    run = subprocess.run(["bash", "-c", shlex.join(argv) + " >&-"], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and (tmp_path / "ds" / "manifest.json").is_file()


LEAVE_THEN_START = """
import ray
from gymray import cluster
from gymray.config import RaySettings
cluster.ensure_ray()
ray.shutdown()
cluster.ensure_ray(RaySettings(address="local", num_cpus=1))
ray.get(ray.remote(lambda: 1).remote())
print("quick" if cluster.disconnect() else "waited", ray._private.worker._global_node)
"""


def test_a_ray_started_after_leaving_a_cluster_is_stopped_in_full(client_env):
    """A Ray the process started is stopped by ``ray.shutdown()`` itself (its raylet and
    GCS), so it never takes the quick way out, even after the process joined a cluster."""
    run = joined_run(client_env, LEAVE_THEN_START)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["waited", "None"], run.stdout + run.stderr[-3000:]


def test_a_prepare_run_as_a_job_exits_with_rays_records_of_it_complete(
    client, client_env, tmp_path
):
    """The run as users submit it: the job succeeds, its JSON is whole in the job's log,
    and Ray's state API shows every task of the driver FINISHED and the driver's exit
    intended, as after a full ``ray.shutdown()`` (an exit without one shows the last
    tasks FAILED)."""
    gym_tree(tmp_path / "gym")
    argv = [sys.executable, "-m", "gymray.run", "sft", "--prepare-only", "--json",
            f"input={tmp_path / 'gym'}", f"output={tmp_path / 'ds'}"]  # fmt: skip
    sid, logs = run_prepare_job(client, argv, "exit")
    summary, _ = json.JSONDecoder().raw_decode(logs[logs.index("{\n") :])
    assert summary["ok"] and summary["dataset"]["counts"]["records"]["train"] > 0

    tasks = job_tasks(client, client_env, sid)
    names = {t.name for t in tasks}
    assert {"read_and_write", "_copy_at"} <= names, names
    states = {t.state for t in tasks}
    assert states == {"FINISHED"}, [(t.name, t.state) for t in tasks if t.state != "FINISHED"]
    state = StateApiClient(client_env.address,
                           headers={"Authorization": f"Bearer {client_env.token}"})  # fmt: skip
    pid = client.get_job_info(sid).driver_info.pid
    options = ListApiOptions(limit=10, detail=True, filters=[("pid", "=", pid)])
    drivers = state.list(StateResource.WORKERS, options=options, raise_on_missing_output=False)
    assert [(w.exit_type, w.is_alive) for w in drivers] == [("INTENDED_USER_EXIT", False)]


SIGTERM_AFTER_JOINING = """
import os, signal, time
from gymray import cluster
got = []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
cluster.ensure_ray()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(4)  # a clean stop may take this long
print("handled", got, flush=True)
"""


def test_a_sigterm_after_joining_goes_to_the_callers_handler_alone(client_env):
    """Joining a cluster makes Ray's core worker, whose C++ SIGTERM handler prints a stack
    before it calls the caller's, and arms an alarm that aborts the process 3 s later:
    a run stopped by ``ray job stop`` died with exit -6 if its cleanup took longer. Nor
    does Ray's warning that a ray.init() outside the main thread sets no handler reach
    the user: gymray joins in a thread on purpose."""
    run = joined_run(client_env, SIGTERM_AFTER_JOINING)
    assert run.returncode == 0 and run.stdout.split() == ["handled", "[15]"], run.stderr
    assert "SIGTERM received" not in run.stderr, run.stderr
    assert "SIGTERM handler is not set" not in run.stderr, run.stderr
