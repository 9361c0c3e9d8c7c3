"""The command line as a user types it: help, versions, grammar, one JSON shape, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ray_head import descendants, proc_table, zombie
from support import REPO

import gymray
from gymray.cli import emit, guarded, json_stdout
from gymray.config import help_rows, load_settings
from gymray.errors import STOPS, Interrupted, raise_if_stopped, signals_raise
from gymray.samples.generate import HERE

SAMPLE = str(HERE / "rollouts.jsonl")


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return python("-m", "gymray.run", *args, env=env, timeout=timeout)


def python(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """This Python run from the repository, without RAY_ADDRESS: a run that needs Ray
    starts a small one of its own."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_local(env),
        timeout=timeout,
    )


def started_cli(*args: str) -> subprocess.Popen:
    """``python -m gymray.run *args`` started as :func:`python` runs it, its stderr piped:
    for tests that signal it mid-run."""
    return subprocess.Popen([sys.executable, "-m", "gymray.run", *args],
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=_local())  # fmt: skip


def _local(env: dict | None = None) -> dict:
    """This process's environment without RAY_ADDRESS, with ``env`` over it (a None value
    removes that variable)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    merged = {**base, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def test_version_and_help_list_every_setting_with_its_default():
    v = cli("--version")
    assert v.returncode == 0 and v.stdout.strip() == f"gymray {gymray.__version__}"
    h = cli("dpo", "--help")
    assert h.returncode == 0 and "usage: usage:" not in h.stdout
    for key, default, _ in help_rows("dpo"):
        assert f"  {key}={default}" in h.stdout, key
    assert "dpo.min_gap=0.2" in h.stdout and "sft.format" not in h.stdout
    assert "exit codes:" in h.stdout and "7  no training records" in h.stdout
    top = cli("--help")
    assert top.returncode == 0 and "inspect" in top.stdout and "~key" in top.stdout


def test_typos_get_a_suggestion_and_exit_2():
    verb = cli("dop")
    assert verb.returncode == 2 and "did you mean 'dpo'?" in verb.stderr
    assert "usage:" not in verb.stderr  # one line, not argparse's block
    flag = cli("sft", "--prepare-onyl")
    assert flag.returncode == 2 and "did you mean --prepare-only?" in flag.stderr
    key = cli("sft", "sft.reward_treshold=0.5", "--prepare-only")
    assert key.returncode == 2 and "did you mean 'sft.reward_threshold'" in key.stderr
    stop = cli("stop", "--help")
    assert stop.returncode == 0 and "--follow" not in stop.stdout
    assert "--follow" in cli("status", "--help").stdout


def test_nemo_rl_override_grammar_and_defaults_in_config_files(tmp_path):
    s = load_settings("sft", ["++nemo_rl.policy.new_key=1", "~nemo_rl.logger.wandb",
                              "+sft.format=simple", "~split.seed", "split.val_fraction=0.2"])  # fmt: skip
    assert s.nemo_rl == {"++policy": {"new_key": 1}, "~logger.wandb": None}
    assert s.sft.format == "simple" and s.split.seed == 0 and s.split.val_fraction == 0.2
    base = tmp_path / "team.yaml"
    base.write_text("sft:\n  reward_threshold: 0.5\n  dedup: false\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults: team.yaml\nsft:\n  reward_threshold: 0.7\n")
    s = load_settings("sft", ["split.seed=3"], [str(mine)])
    assert (s.sft.reward_threshold, s.sft.dedup, s.split.seed) == (0.7, False, 3)
    printed = cli("sft", "--config", str(mine), "--print-settings")
    assert printed.returncode == 0 and "reward_threshold: 0.7" in printed.stdout


def test_one_json_shape_for_every_outcome(tmp_path):
    """... and only a run that did not succeed keeps its log file."""
    logs = {k: tmp_path / f"logs-{k}" for k in ("ok", "none")}
    ok = cli("sft", f"input={SAMPLE}", f"output={tmp_path / 'a'}", "--prepare-only", "--json",
             env={"GYMRAY_LOG_DIR": str(logs["ok"])})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert set(out) >= {"gymray", "command", "algo", "ok", "exit_code", "error", "dataset", "job"}
    assert out["ok"] and out["command"] == "prepare" and out["dataset"]["paths"]["train"]
    assert out["error"] is None and list(logs["ok"].iterdir()) == []
    # no pair at all: the same shape, a val path that is null, its own exit code and error
    none = cli("dpo", f"input={SAMPLE}", f"output={tmp_path / 'b'}", "dpo.min_gap=100",
               "--prepare-only", "--json", env={"GYMRAY_LOG_DIR": str(logs["none"])})  # fmt: skip
    out = json.loads(none.stdout)
    assert none.returncode == 7 and out["exit_code"] == 7 and out["dataset"]["paths"]["val"] is None
    assert out["error"]["type"] == "EmptyDatasetError" and out["error"]["exit_code"] == 7
    assert out["error"]["message"] in none.stderr  # what the line on stderr says
    (kept,) = logs["none"].iterdir()
    assert out["error"]["log"] == str(kept) and "preparing dpo records" in kept.read_text()
    # an error: still one JSON object on stdout, and one line on stderr
    bad = cli("sft", "sft.format=chatml", "--prepare-only", "--json")
    out = json.loads(bad.stdout)
    assert bad.returncode == 2 and not out["ok"] and out["error"]["type"] == "ConfigError"
    assert "sft.format" in out["error"]["message"]
    assert bad.stderr.count("gymray: error:") == 1 and "Traceback" not in bad.stderr


def test_json_stdout_holds_the_json_alone_while_threads_print(capsys):
    """Ray prints the raylet's warnings to ``sys.stdout`` from a thread of the driver: a
    DPO 1M run on a 16-CPU head wrote "(raylet) WARNING: 9 PYTHON worker processes have
    been started ..." into ``--json``'s stdout, and no parser could read it. While a verb
    runs, stdout is the JSON's alone; what else prints there goes to stderr."""

    def verb() -> int:
        t = threading.Thread(target=lambda: print("(raylet) WARNING: workers started"))
        t.start()
        t.join()
        print("a library's line")
        emit("prepare", "sft", 0, dataset={"output": "o"})
        return 0

    assert guarded(verb, "prepare", "sft", json_output=True) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["dataset"] == {"output": "o"}
    assert "(raylet) WARNING: workers started" in err and "a library's line" in err
    # gymray.run holds stdout past the verb, until Ray's threads are stopped
    with json_stdout(True):
        assert guarded(verb, "prepare", "sft", json_output=True) == 0
        print("(raylet) WARNING: printed while Ray disconnects")
    out, err = capsys.readouterr()
    assert json.loads(out)["ok"] and "while Ray disconnects" in err
    # without --json, stdout is stdout
    assert guarded(lambda: print("plain") or 0, "prepare", "sft", False) == 0
    assert capsys.readouterr().out == "plain\n"


def test_an_unexpected_failure_is_one_line_naming_a_log_with_the_traceback(tmp_path):
    """A file that cannot be listed as input is a user error; a crash inside gymray is
    'unexpected ...' with the traceback in the log file the line names."""
    env = {"GYMRAY_LOG_DIR": str(tmp_path / "logs"), "GYMRAY_CONFIGS_DIR": str(tmp_path / "c")}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "sft.yaml").write_text("sft: [not, a, mapping]\n")
    p = cli("sft", "--prepare-only", env=env)
    line = [x for x in p.stderr.splitlines() if x.startswith("gymray: error:")]
    assert p.returncode in (2, 9) and len(line) == 1 and "Traceback" not in p.stderr
    logs = list((tmp_path / "logs").glob("gymray-*.log"))
    assert logs and "Traceback" in logs[0].read_text()


def test_the_launch_is_checked_before_the_prepare(tmp_path):
    out = tmp_path / "never"
    p = cli("sft", f"output={out}", "job.nemo_rl_dir=relative/nemo-rl", "--dry-run")
    assert p.returncode == 2 and "job.nemo_rl_dir" in p.stderr and "absolute" in p.stderr
    assert not out.exists()  # nothing was prepared


def test_outputs_ray_would_delete_or_misplace_are_refused(tmp_path):
    doomed = "/tmp/ray/session_x/runtime_resources/working_dir_files/abc/out"
    p = cli("sft", f"output={doomed}", "--prepare-only")
    assert p.returncode == 2 and "working directory" in p.stderr
    inside_job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
        {"metadata": {"job_submission_id": "raysubmit_x"}})}  # fmt: skip
    p = cli("sft", "output=relative/out", "--prepare-only", env=inside_job)
    assert p.returncode == 2 and "absolute path" in p.stderr and "raysubmit_x" in p.stderr


def test_a_cluster_that_does_not_answer_fails_fast_with_exit_5(tmp_path):
    started = time.monotonic()
    p = cli("sft", f"output={tmp_path / 'o'}", "--prepare-only",
            env={"RAY_ADDRESS": "127.0.0.1:9", "GYMRAY_LOG_DIR": str(tmp_path)})  # fmt: skip
    assert p.returncode == 5 and "127.0.0.1:9" in p.stderr, p.stderr
    assert time.monotonic() - started < 60
    p = cli("status", "some-id", "--address", "127.0.0.1:9")
    assert p.returncode == 5 and "127.0.0.1:9" in p.stderr
    p = cli("sft", "--prepare-only", env={"RAY_ADDRESS": "http://127.0.0.1:9"})
    assert p.returncode == 2 and "job API" in p.stderr and "ray job submit" in p.stderr


@pytest.mark.parametrize("algo", ["sft", "dpo"])
def test_sigterm_during_a_prepare_stops_it_cleanly_with_exit_3(tmp_path, algo):
    """Per-rollout tasks and a grouped run's sort tasks alike: the run stops, what it
    wrote is removed, exit 3."""
    big = tmp_path / "big.jsonl"
    big.write_bytes(Path(SAMPLE).read_bytes() * 400)
    out = tmp_path / "o"
    proc = started_cli(algo, f"input={big}", f"output={out}", "--prepare-only")
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.iterdir() if "gymray-tmp" in p.name]:  # the run is on
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    started = time.monotonic()
    proc.terminate()
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 3 and "stopped by SIGTERM" in err, err
    assert time.monotonic() - started < 20
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "gymray-tmp" in p.name]


def _raylet(cmd: str) -> bool:
    return cmd.split(" ", 1)[0].endswith("/raylet")


def _ray_worker(cmd: str) -> bool:
    return cmd.startswith("ray::IDLE")


def _of_raylets(pid: int, raylets: set[int]) -> bool:
    """Whether ``pid`` is an agent one of ``raylets`` started (Ray's agents outlive a
    killed raylet, waiting for its GCS)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    except OSError:
        return False
    return int(env.get(b"RAY_RAYLET_PID", b"0")) in raylets


@pytest.mark.parametrize(
    "sig, started",
    [(signal.SIGTERM, _raylet), (signal.SIGTERM, _ray_worker), (signal.SIGINT, _ray_worker)],
    ids=["sigterm-processes", "sigterm-driver", "sigint-driver"],
)
def test_a_signal_while_the_run_starts_its_ray_stops_it_with_exit_3_and_leaves_no_ray(
    tmp_path, sig, started
):
    """A SIGTERM while ``ray.init()`` starts the run's own Ray: once its raylet runs (Ray
    starts its processes), and once a worker does (Ray connects the driver). ray.init()
    puts in a handler that exits at once: the first said "unexpected SystemExit: 15", exit
    9, and left Ray's agents for a minute; the second was aborted by Ray's C++ handler's
    alarm (-6) 3 s later. A SIGINT there (Ctrl-C) crashed the process as it exited (-11)."""
    out = tmp_path / "o"
    proc = started_cli("sft", f"output={out}", "--prepare-only")
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while not any(started(cmd) for cmd in seen.values()):
        assert time.monotonic() < deadline and proc.poll() is None, "Ray never started"
        table = proc_table()
        seen |= {pid: table[pid][1] for pid in descendants({proc.pid}, table) - {proc.pid}}
        time.sleep(0.005)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 3 and f"stopped by {sig.name}" in err, err
    assert not out.exists()
    raylets = {pid for pid, cmd in seen.items() if _raylet(cmd)}
    left = set(seen)
    deadline = time.monotonic() + 15
    while left and time.monotonic() < deadline:
        left = {p for p in seen if not zombie(p)} | {
            p for p in proc_table() if _of_raylets(p, raylets)
        }
        time.sleep(0.2)
    assert not left, {p: seen.get(p) or proc_table().get(p) for p in left}


def test_a_sigterm_held_while_ray_starts_still_stops_the_run_if_starting_fails():
    """The SIGTERM held through a local ray.init() reaches the CLI's handler once it
    returns, also when it failed: a stop was asked for, and exit 3 says so. Ray's own
    handler installer is back afterwards."""
    import ray

    from gymray.cluster import _keep_signals

    install = ray._private.utils.set_sigterm_handler
    held = []
    with pytest.raises(Interrupted, match="stopped by SIGTERM"):
        with signals_raise(), _keep_signals(starts_ray=True):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # a handler would run here
            held.append(list(STOPS))
            raise RuntimeError("ray.init() failed")
    assert held == [[]]  # not given while "ray.init()" ran
    assert ray._private.utils.set_sigterm_handler is install


def test_a_local_ray_leaves_the_callers_sigterm_handler_and_timer_alone():
    """Ray's core worker installed a C++ failure handler in the driver: a SIGTERM printed
    a stack, replaced the caller's timer with a 3 s alarm that aborted the process (-6),
    and SIGTERM went back to the default action once the driver shut down (-15). With
    a Ray gymray started, the caller's handler gets each SIGTERM alone, before and after
    ray.shutdown(), and its watchdog timer keeps its time."""
    code = "\n".join([
        "import os, signal, time",
        "from gymray import cluster",
        "got = []",
        "signal.signal(signal.SIGTERM, lambda s, f: got.append(s))",
        "signal.signal(signal.SIGALRM, lambda s, f: got.append(s))",
        "signal.setitimer(signal.ITIMER_REAL, 60)",
        "cluster.ensure_ray()",
        "os.kill(os.getpid(), signal.SIGTERM)",
        "time.sleep(4)",
        "left = signal.getitimer(signal.ITIMER_REAL)[0]",
        "cluster.disconnect(wait=True)",
        "os.kill(os.getpid(), signal.SIGTERM)",
        "time.sleep(0.2)",
        "print(got, 40 < left < 57)",
    ])  # fmt: skip
    run = python("-c", code, timeout=120)
    assert (run.returncode, run.stdout.split()) == (0, ["[15,", "15]", "True"]), run.stderr
    assert "SIGTERM received" not in run.stderr, run.stderr


def test_a_sigterm_once_the_dataset_is_published_leaves_the_exit_code_alone(tmp_path):
    """Once a prepare has published its dataset it prints its summary and lets its local
    Ray go (~1 s). A SIGTERM then gave exit 3 ("nothing half-written was published") or
    killed the process (-15), over a complete dataset. A second one still ends it."""
    for signals, code in (([signal.SIGTERM], 0), ([signal.SIGTERM, signal.SIGTERM], -15)):
        out = tmp_path / f"o{len(signals)}"
        proc = started_cli("sft", f"output={out}", "--prepare-only")
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("gymray: wrote"):  # published; the summary follows
                for sig in signals:
                    proc.send_signal(sig)
                    time.sleep(0.05)
                break
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == code, "".join(lines) + rest
        assert "error" not in rest and (out / "manifest.json").exists()


class DropsExceptions:
    """Exceptions raised in ``__del__`` are printed and dropped, as in a Cython callback
    (a CI run's SIGTERM landed in Ray's 'cls_name' one, and the prepare published)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)  # the handler runs here, and its Stop is dropped


@pytest.mark.parametrize("checkpoint", [True, False], ids=["next_checkpoint", "at_the_end"])
def test_a_stop_dropped_where_exceptions_cannot_propagate_still_stops_the_run(checkpoint):
    went_on = []
    with pytest.raises(Interrupted, match="stopped by SIGTERM"):
        with signals_raise():
            DropsExceptions()  # made and finalized at once
            went_on.append("after the drop")
            if checkpoint:  # as the engine does between parts and before publishing
                raise_if_stopped()
                went_on.append("past the checkpoint")
    assert went_on == ["after the drop"]
    assert STOPS == []  # the next run starts clean


@pytest.mark.usefixtures("ray_session")
def test_inspect_shows_counts_environments_and_conversations(tmp_path):
    gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "d"), **{"sft.reward_threshold": 0})
    p = cli("inspect", str(tmp_path / "d"), "--examples", "1")
    assert p.returncode == 0, p.stderr
    assert "sft dataset (openai)" in p.stdout and "environment" in p.stdout
    assert "assistant:" in p.stdout and "first 1 record(s):" in p.stdout
    j = json.loads(cli("show", str(tmp_path / "d"), "--json").stdout)
    assert j["command"] == "show" and j["dataset"]["counts"]["records"]["train"] > 0


def test_a_stop_signal_is_not_swallowed_by_a_librarys_except_exception():
    """A SIGTERM that lands inside library code with a broad ``except Exception`` (Ray
    Data's dataset-id fallback has one) still stops the run: once, it was swallowed
    there and the prepare went on to publish (exit 0)."""

    def library_call():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        except Exception:  # noqa: BLE001 - what the library does
            pass

    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(Interrupted, match="stopped by SIGTERM"):
        with signals_raise():
            library_call()
    assert time.monotonic() - started < 4
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_the_cli_imports_the_job_client_only_to_submit():
    """The job client (aiohttp, an SSL context) costs a driver ~0.1-0.2 CPU-s of imports;
    a --prepare-only run never submits, so loading the CLI does not import it."""
    code = "import sys, gymray.cli\nprint(sorted(m for m in ('ray.job_submission', 'aiohttp', "
    code += "'ray.data') if m in sys.modules))"
    run = python("-c", code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def entry(tmp_path: Path, before: str, after: str) -> subprocess.CompletedProcess:
    """``gymray.run.main()``, the process's entry, preparing the sample in a Python of its
    own: ``before`` runs first, ``after`` (given ``code``, the exit code) prints what the
    test checks."""
    return python("-c", "\n".join([
        "import gc, importlib, sys, ray", "entry = importlib.import_module('gymray.run')",
        before,
        f"sys.argv = ['gymray', 'sft', 'input={SAMPLE}', 'output={tmp_path / 'o'}', "
        "'--prepare-only', 'ray.num_cpus=1']",
        "code = entry.main()", after,
    ]))  # fmt: skip


def test_the_process_lets_go_of_ray_and_skips_the_last_collection(tmp_path):
    """Ray's exit hook sleeps 0.5 s for workers' log lines before it disconnects, and
    gymray forwards none (``log_to_driver=False``); the interpreter's last collection walks
    every object left (0.2 s): ``python -m gymray.run`` disconnects itself and freezes
    what is left once the command is done."""
    proc = entry(tmp_path, "", "print('connected' if ray.is_initialized() else 'let go', code, "
                 "'frozen' if gc.get_freeze_count() > 1000 else 'collected')")  # fmt: skip
    assert proc.stdout.strip() == "let go 0 frozen", proc.stderr[-2000:]
    assert (tmp_path / "o" / "manifest.json").is_file()


def test_the_imports_are_frozen_before_the_command_runs(tmp_path):
    """Collections during the run skip what the imports made (Ray, pyarrow, gymray): a
    DPO 1M CLI run on 2 cores spent 0.142 s in two full collections (Ray's driver
    collects when its object store asks), 0.016 s in one once frozen."""
    spy = ("import gymray.cli\nreal = gymray.cli.main\n"
           "def spy(*a, **k):\n    print('frozen' if gc.get_freeze_count() > 1000 else 'not')\n"
           "    return real(*a, **k)\n"
           "gymray.cli.main = spy")  # fmt: skip
    proc = entry(tmp_path, spy, "print(code)")
    assert proc.stdout.split() == ["frozen", "0"], proc.stdout + proc.stderr[-2000:]


def test_a_sigterm_while_the_cli_lets_go_of_its_ray_leaves_the_exit_code(tmp_path):
    """Ray's driver, as it shut down, set SIGTERM back to its default action, over the
    CLI's handler (its C++ failure handler's uninstall): a SIGTERM while the local Ray
    stopped, in the ~1 s after a prepare's last line, killed a run whose dataset was
    published (-15). Here the SIGTERM comes as ``ray.shutdown()`` returns."""
    late = ("import os, signal, time\nreal = ray.shutdown\n"
            "def shutdown(*a, **k):\n    real(*a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.5)\n"
            "ray.shutdown = shutdown")  # fmt: skip
    proc = entry(tmp_path, late, "print(code)")
    assert (proc.returncode, proc.stdout.strip()) == (0, "0"), proc.stderr[-2000:]
    assert (tmp_path / "o" / "manifest.json").is_file()


def test_a_failing_ray_shutdown_leaves_the_commands_exit_code(tmp_path):
    boom = "def boom(*a, **k):\n    raise RuntimeError('the GCS is gone')\nray.shutdown = boom"
    proc = entry(tmp_path, boom, "print(code)")
    assert proc.stdout.strip() == "0" and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_the_cli_starts_no_blas_threads_and_leaves_the_environment_as_it_was():
    """Loading numpy (pyarrow imports it) starts OpenBLAS's thread pool, one thread per
    core, each spinning when it starts: 0.1 CPU-s of the driver's 0.8 on 2 cores, for
    threads gymray never uses. The CLI starts none, and its children (a local Ray, the
    NeMo RL job) inherit the caller's environment."""
    code = "import os, sys, gymray.run\nsys.argv = ['gymray', '--version']\n"
    code += "code = gymray.run.main()\nimport numpy\n"
    code += "print(len(os.listdir('/proc/self/task')), os.environ.get('OPENBLAS_NUM_THREADS'))"
    threads = {}
    for setting in ("unset", "1", "2"):
        blas = None if setting == "unset" else setting
        run = python("-c", code, env={"OPENBLAS_NUM_THREADS": blas}, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        count, kept = run.stdout.splitlines()[-1].split()
        assert kept == ("None" if setting == "unset" else setting)
        threads[setting] = int(count)
    assert threads["unset"] == threads["1"], threads
    if os.cpu_count() > 1:  # the caller's own setting is kept: its pool is started
        assert threads["2"] == threads["1"] + 1, threads


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_cli_imports_stops_it_with_exit_3_before_anything_starts(tmp_path, sig):
    """The CLI's imports (Ray, pyarrow, gymray) take ~0.5 s before its handler exists: a
    SIGTERM there killed it (-15), a Ctrl-C printed a KeyboardInterrupt traceback. Now
    either is held until the verb starts, which stops at once: exit 3, no Ray started,
    nothing written. The signal is sent while omegaconf is imported, from an import hook."""
    code = "\n".join([
        "import importlib.abc, os, signal, sys",
        "class Kill(importlib.abc.MetaPathFinder):",
        "    def find_spec(self, name, path, target=None):",
        "        if name == 'omegaconf':",
        "            sys.meta_path.remove(self)",
        f"            os.kill(os.getpid(), signal.{sig})",
        "sys.meta_path.insert(0, Kill())",
        f"sys.argv = ['gymray', 'sft', 'input={SAMPLE}', 'output={tmp_path / 'o'}', "
        "'--prepare-only', 'ray.num_cpus=1']",
        "from gymray.run import main",
        "print('omegaconf' in sys.modules, flush=True)",
        "sys.exit(main())",
    ])  # fmt: skip
    run = python("-c", code, timeout=120)
    assert run.stdout.split() == ["False"]  # the hook fired in main(), not at import
    assert run.returncode == 3, (run.returncode, run.stderr[-2000:])
    assert f"stopped by {sig}" in run.stderr and "Traceback" not in run.stderr
    assert "Ray" not in run.stderr and not (tmp_path / "o").exists()
