"""Shared pieces of the gymray benchmarks: corpus building, a Ray head of the
benchmark's own, CPU and memory accounting of every process from /proc, the
measured runs (baselines, ``gymray.prepare`` in a connected driver, the CLI),
output comparison, ratios and result files.

Not part of the package and not run in CI; see ``benchmarks/README.md``.
Nothing here imports gymray's internals: the gymray side is driven through
``gymray.prepare`` (``prepare_driver.py``) and ``python -m gymray.run``, so the
benchmark survives engine changes. Only the full single-process baselines
(``bench_sft.py`` / ``bench_dpo.py``) use gymray's pure modules.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# ../shared beside the repo (a worktree of it, or the main checkout)
SHARED = Path(os.environ.get("GYMRAY_SHARED") or HERE.parents[1] / "shared")
MAKE_CORPUS = Path(os.environ.get("GYMRAY_MAKE_CORPUS") or SHARED / "bench" / "make_corpus.py")
DEFAULT_DATA = Path(
    os.environ.get("GYMRAY_BENCH_DATA") or Path(tempfile.gettempdir()) / "gymray-bench"
)
RESULTS = HERE / "results"
GIB = 1 << 30
MIB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- args
def common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--shards", type=int, default=8, help="rollout files in the corpus")
    ap.add_argument("--seed", type=int, default=0, help="make_corpus.py --seed")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="corpora and outputs (default: $GYMRAY_BENCH_DATA, else TMPDIR/gymray-bench; "
        f"here {DEFAULT_DATA})",
    )
    ap.add_argument("--num-cpus", type=int, default=2, help="ray start --num-cpus (default 2)")
    ap.add_argument(
        "--object-store-gib", type=float, default=None, help="ray start --object-store-memory"
    )
    ap.add_argument(
        "--worker-niceness",
        type=int,
        default=0,
        help="RAY_worker_niceness of the head (Ray's default 15 makes its workers yield to "
        "every other process on a shared machine; 0 gives gymray and the baselines the same "
        "priority)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=3,
        help="gymray.prepare calls in one connected driver: the first is cold, the rest warm",
    )
    ap.add_argument("--cli-runs", type=int, default=2, help="CLI runs: the first cold, then warm")
    ap.add_argument(
        "--baseline-runs",
        type=int,
        default=2,
        help="runs of each single-process loop, split before and after the gymray runs "
        "(the best is compared: a noisy machine only ever slows a run down)",
    )
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("baseline", "minimal", "prepare", "cli"),
        help="leave a side out (repeatable)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra gymray setting for every gymray run, e.g. ray.block_bytes=8388608")  # fmt: skip
    ap.add_argument("--no-compare", action="store_true", help="do not compare the output lines")
    ap.add_argument("--keep-output", action="store_true", help="keep the outputs after the run")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--no-save", action="store_true", help="print the summary, write no file")
    ap.add_argument("--sample-interval", type=float, default=0.2, help="/proc sampling period (s)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each measured run, wait up to this many seconds for the machine to be "
        "quiet (a shared machine: other processes using < --quiet-cores cores)",
    )
    ap.add_argument("--quiet-cores", type=float, default=0.3, help="see --quiet-wait")


# --------------------------------------------------------------------------- corpus
def build_corpus(path: Path, make_args: list[str], *, generator: list[str] | None = None) -> dict:
    """Run the corpus generator into ``path`` unless a complete corpus with the
    same arguments is there already (``corpus.json`` is written last, so a
    half-built corpus is rebuilt)."""
    cmd = generator or [sys.executable, str(MAKE_CORPUS)]
    f = path / "corpus.json"
    if f.is_file():
        try:
            summary = json.loads(f.read_text())
        except ValueError:
            summary = {}
        if summary.get("args") == make_args:
            return {**summary, "reused": True}
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [str(tmp)] + make_args, check=True, capture_output=True, text=True)
    made = json.loads(out.stdout.strip().splitlines()[-1])
    tmp.rename(path)
    summary = {
        "args": make_args,
        "generator": generator_name(cmd[1:]),
        "build_seconds": round(time.perf_counter() - t0, 1),
        **made,
    }
    f.write_text(json.dumps(summary, indent=1))
    return {**summary, "reused": False}


def sft_corpus(
    data_dir: Path,
    tasks: int,
    repeats: int = 4,
    shards: int = 8,
    seed: int = 0,
    bad_fraction: float = 0.0,
) -> tuple[Path, list[str]]:
    """Where the SFT benchmarks' corpus lives, and the generator arguments that make it
    (``bench_sft.py`` and ``bench_ab.py`` share it: one name, one corpus)."""
    make_args = ["--tasks", str(tasks), "--repeats", str(repeats), "--shards", str(shards),
                 "--seed", str(seed), "--bad-fraction", str(bad_fraction)]  # fmt: skip
    name = f"sft-t{tasks}-r{repeats}-s{shards}-x{seed}-b{bad_fraction}"
    return data_dir / "corpora" / name, make_args


def generator_name(parts: list[str]) -> str:
    """The generator's command by file names only: a corpus record names no machine's
    directories (corpora built by older benchmarks recorded the whole path)."""
    return " ".join(Path(c).name for c in parts)


def rollout_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.endswith(".jsonl"))


def corpus_info(path: Path, made: dict, make_args: list[str]) -> dict:
    files = rollout_files(path)
    nbytes = sum(p.stat().st_size for p in files)
    return {
        "path": str(path),
        "generator": generator_name((made.get("generator") or "").split()) or None,
        "make_args": make_args,
        "files": len(files),
        "lines": made["lines"],
        "bad_lines": made.get("bad_lines", 0),
        "bytes": nbytes,
        "gb": round(nbytes / 1e9, 3),
        "mean_line_bytes": round(nbytes / max(1, made["lines"])),
        "reused": made["reused"],
    }


def settle(corpus: Path, quiet_cores: float = 0.3, max_wait: float = 0.0) -> dict:
    """Before a measured run: the corpus in the page cache (every side reads it
    from memory), earlier outputs written back (no writeback steals the run's
    CPU), then up to ``max_wait`` seconds for the machine to go quiet (other
    processes, e.g. someone's tests, using less than ``quiet_cores`` cores over
    2 s). Returns how long it waited and the load it saw last."""
    for p in rollout_files(corpus):
        with open(p, "rb") as fh:
            while fh.read(64 << 20):
                pass
    os.sync()
    t0 = time.perf_counter()
    while True:
        b0 = machine_busy_seconds()
        time.sleep(2.0)
        load = (machine_busy_seconds() - b0) / 2.0
        waited = time.perf_counter() - t0
        if load < quiet_cores or waited >= max_wait:
            return {"waited_seconds": round(waited, 1), "machine_cores_busy_before": round(load, 2)}


# --------------------------------------------------------------------------- /proc
def _stat(pid: int) -> tuple[int, float, int, int] | None:
    """(ppid, CPU seconds user+system, start time in ticks since boot, RSS bytes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(b")") + 2 :].split()  # fields from 3 (state) on
    return (
        int(rest[1]),
        (int(rest[11]) + int(rest[12])) / CLK,
        int(rest[19]),
        int(rest[21]) * PAGE,
    )


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def pss_and_private(pid: int) -> tuple[int, int] | None:
    """(PSS, private bytes) of a process: its share of every page it maps, and the
    pages no other process maps (Private_Clean + Private_Dirty: what it alone costs)."""
    pss = private = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for row in f:
                if row.startswith(b"Pss:"):
                    pss = int(row.split()[1]) * 1024
                elif row.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    private += int(row.split()[1]) * 1024
    except OSError:
        return None
    return pss, private


def private_in_object_store(pid: int) -> int:
    """The private bytes of a process inside Ray's object store (the shared-memory
    file ``/dev/shm/plasma*`` every worker maps): pages of objects the process wrote or
    read that no other process has touched since. They are the object store's memory
    (bounded by its configured size, whatever the number of workers), not the
    process's heap, but ``Private_*`` counts them until another process maps them."""
    private = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps", "rb") as f:
            for row in f:
                if row[:1] in b"0123456789abcdef" and b"-" in row.split(b" ", 1)[0]:
                    inside = b"/plasma" in row
                elif inside and row.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    private += int(row.split()[1]) * 1024
    except OSError:
        return 0
    return private


def _uptime_ticks() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * CLK)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK


def _all_processes() -> dict[int, tuple]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


DAEMONS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env",
           "ray.util.client.server")  # fmt: skip
SHUFFLE_WORDS = ("Aggregator", "shuffle", "Shuffle", "sort", "Sort", "_sample_block")
SHUFFLE_TASKS = {"map", "reduce", "merge", "map_partition"}  # Ray Data exchange tasks
MAP_PREFIXES = (
    "read_and_write",
    "parse_blocks",
    "split_ranges",
    "group_range",
    "MapBatches",
    "Map(",
    "ReadRange",
    "Read",
    "FlatMap",
    "Filter",
    "Project",
    "Write",
)
DATA_ACTORS = ("_StatsActor", "_AutoscalingCoordinator", "AutoscalingRequester", "SplitCoordinator")


def short_title(title: str) -> str:
    """``ray::Name`` for Ray workers, else the program or script name."""
    if title.startswith("ray::"):
        return title.split(" ")[0][:70]
    parts = title.split(" ")
    name = os.path.basename(parts[0])
    if name.startswith("python"):
        script = next((os.path.basename(x) for x in parts[1:] if x.endswith(".py")), None)
        if script == "main.py" and "runtime_env" in title:
            script = "runtime_env/agent/main.py"
        name = script or name
    return name


def role_of(title: str, is_driver: bool) -> str:
    """A process's role from its title (Ray workers retitle themselves per task)."""
    if is_driver:
        return "driver"
    if title.startswith("ray::"):
        name = title[5:].split(" ")[0]
        if name.startswith(("DashboardAgent", "RuntimeEnvAgent")):
            return "ray daemons"
        if name.startswith("IDLE"):
            return "workers: start-up/idle"
        if name.startswith(DATA_ACTORS):
            return "ray data control actors"
        if any(w in name for w in SHUFFLE_WORDS) or name.split(".")[-1] in SHUFFLE_TASKS:
            return "shuffle + sort"
        if name.startswith(MAP_PREFIXES):
            return "map workers"
        return "other ray tasks"  # gymray's own Ray tasks (assembling files, Parquet fixes)
    if "default_worker.py" in title:
        return "workers: start-up/idle"
    if any(d in title for d in DAEMONS):
        return "ray daemons"
    return "other"


class Meter:
    """CPU and memory of a set of process trees, sampled from /proc.

    The trees are the children of this (harness) process (a driver, the CLI, a
    baseline) and the processes of the benchmark's Ray head (its daemons and, as
    the raylet's children, every worker and actor). Every ``interval`` seconds
    each process's utime+stime is read and the increase since the last sample
    is credited to the role its title had (a worker that was running a task and
    is IDLE now is credited to that task); a process born during the window
    counts from 0. Memory: the RSS sum at every sample and the PSS sum
    (``/proc/PID/smaps_rollup``, shared pages split among the processes mapping
    them) every ``pss_every`` samples; their peaks.

    What a process spends between its last sample and its exit is not seen
    (Ray does not reap its workers into the raylet's cutime): at most one
    interval per exiting process. Processes the harness waits for are given
    exactly (``exact`` in :meth:`stop`, from ``wait4``). ``other_cpu_seconds``
    is the rest of the machine meanwhile (other users, kernel writeback).
    """

    def __init__(
        self,
        roots: Callable[[], set[int]],
        driver: Callable[[], int | None] = lambda: None,
        interval: float = 0.2,
        pss_every: int = 5,
    ):
        self.roots, self.driver = roots, driver
        self.interval, self.pss_every = interval, pss_every
        self.me = os.getpid()
        self.last: dict[int, float] = {}
        self.title: dict[int, str] = {}
        self.by_role: dict[str, float] = {}
        self.by_title: dict[str, float] = {}
        self.credited: dict[int, dict[tuple[str, str], float]] = {}  # pid -> (role, title) -> s
        self.parent: dict[int, int] = {}
        self.samples = 0
        self.peak_rss = self.peak_pss = self.peak_driver_rss = 0
        self.rss0 = self.pss0 = 0
        self.peak_roles: dict[str, int] = {}
        self.peak_private: dict[str, int] = {}  # role -> the most one process held alone
        # the same, without its pages of the object store (see private_in_object_store)
        self.peak_own: dict[str, int] = {}
        self.seen: set[int] = set()
        self.gone: set[int] = set()
        self._stop = threading.Event()

    def _tree(self) -> tuple[dict[int, tuple], set[int]]:
        procs = _all_processes()
        children: dict[int, list[int]] = {}
        for pid, st in procs.items():
            children.setdefault(st[0], []).append(pid)
        todo = [p for p in self.roots() | set(children.get(self.me, ())) if p in procs]
        tree: set[int] = set()
        while todo:
            p = todo.pop()
            if p not in tree and p != self.me:
                tree.add(p)
                todo.extend(children.get(p, ()))
        return procs, tree

    def _sample(self, credit: bool) -> None:
        procs, tree = self._tree()
        driver = self.driver()
        rss = 0
        roles: dict[str, int] = {}
        pss_now = self.samples % self.pss_every == 0
        pss = 0
        for pid in tree:
            ppid, cpu, start, prss = procs[pid]
            self.parent[pid] = ppid
            title = _cmdline(pid)
            role_title = title
            if pid not in self.last:
                self.seen.add(pid)
                self.last[pid] = 0.0 if (credit and start >= self.t0_ticks) else cpu
            prev = self.title.get(pid)
            if prev and title.startswith("ray::IDLE") and not prev.startswith("ray::IDLE"):
                role_title = prev  # it just finished that task
            delta = cpu - self.last[pid]
            if credit and delta > 0:
                role = role_of(role_title, pid == driver)
                key = "driver" if pid == driver else short_title(role_title)
                self._credit(pid, role, key, delta)
            self.last[pid] = cpu
            self.title[pid] = title
            rss += prss
            role = role_of(title, pid == driver)
            roles[role] = roles.get(role, 0) + prss
            if pid == driver:
                self.peak_driver_rss = max(self.peak_driver_rss, prss)
            if pss_now and (measured := pss_and_private(pid)):
                pss += measured[0]
                self.peak_private[role] = max(self.peak_private.get(role, 0), measured[1])
                if measured[1] > self.peak_own.get(role, 0):  # (own <= private: else no news)
                    own = measured[1] - private_in_object_store(pid)
                    self.peak_own[role] = max(self.peak_own.get(role, 0), own)
        self.gone |= set(self.last) - tree
        if rss > self.peak_rss:
            self.peak_rss, self.peak_roles = rss, roles
        if pss_now:
            self.peak_pss = max(self.peak_pss, pss)
        if self.samples == 0:
            self.rss0, self.pss0 = rss, pss
        self.samples += 1

    def _credit(self, pid: int, role: str, key: str, seconds: float) -> None:
        self.by_role[role] = self.by_role.get(role, 0.0) + seconds
        self.by_title[key] = self.by_title.get(key, 0.0) + seconds
        mine = self.credited.setdefault(pid, {})
        mine[(role, key)] = mine.get((role, key), 0.0) + seconds

    def _family(self, pid: int) -> set[int]:
        """``pid`` and the processes seen descending from it."""
        family, grew = {pid}, True
        while grew:
            more = {p for p, pp in self.parent.items() if pp in family} - family
            family |= more
            grew = bool(more)
        return family

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(credit=True)

    def start(self) -> Meter:
        self.t0 = time.perf_counter()
        self.t0_ticks = _uptime_ticks()
        self.busy0 = machine_busy_seconds()
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.harness0 = r.ru_utime + r.ru_stime
        self._sample(credit=False)
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self._thread.start()
        return self

    def stop(self, exact: dict[int, tuple[str, float]] | None = None) -> dict:
        """Stop sampling; ``exact`` maps a waited-for child's pid to (role, its
        total CPU seconds from wait4), replacing what the samples saw of it."""
        self._stop.set()
        self._thread.join()
        self._sample(credit=True)
        wall = time.perf_counter() - self.t0
        machine = machine_busy_seconds() - self.busy0
        r = resource.getrusage(resource.RUSAGE_SELF)
        harness = r.ru_utime + r.ru_stime - self.harness0
        for pid, (role, cpu) in (exact or {}).items():
            # a child born in the window: its whole life, from wait4, in place of samples;
            # wait4 counts the children it waited for too (the N-process loop's)
            for p in self._family(pid):
                for (r, key), v in self.credited.pop(p, {}).items():
                    self.by_role[r] -= v
                    self.by_title[key] -= v
            self._credit(pid, role, "driver" if role == "driver" else role, cpu)
        total = sum(self.by_role.values())
        driver = self.by_role.get("driver", 0.0)
        return {
            "window_seconds": round(wall, 2),
            "cpu_seconds": round(total, 2),
            "cpu_seconds_by_role": {
                k: round(v, 2) for k, v in sorted(self.by_role.items(), key=lambda kv: -kv[1])
            },
            "driver_share": round(driver / total, 4) if total else None,
            "cpu_seconds_by_title": {
                k: round(v, 2)
                for k, v in sorted(self.by_title.items(), key=lambda kv: -kv[1])[:14]
                if v >= 0.05
            },
            "machine_cpu_seconds": round(machine, 2),
            "harness_cpu_seconds": round(harness, 2),
            "other_cpu_seconds": round(machine - total - harness, 2),
            "peak_rss_sum_gib": round(self.peak_rss / GIB, 3),
            "peak_pss_sum_gib": round(self.peak_pss / GIB, 3),
            "rss_sum_at_start_gib": round(self.rss0 / GIB, 3),
            "pss_sum_at_start_gib": round(self.pss0 / GIB, 3),
            "peak_driver_rss_gib": round(self.peak_driver_rss / GIB, 3),
            "rss_gib_by_role_at_peak": {
                k: round(v / GIB, 3)
                for k, v in sorted(self.peak_roles.items(), key=lambda kv: -kv[1])
            },
            "peak_private_mib_of_one_process_by_role": {
                k: round(v / MIB, 1)
                for k, v in sorted(self.peak_private.items(), key=lambda kv: -kv[1])
            },
            "peak_private_mib_outside_object_store_by_role": {
                k: round(v / MIB, 1)
                for k, v in sorted(self.peak_own.items(), key=lambda kv: -kv[1])
            },
            "processes_seen": len(self.seen),
            "processes_exited": len(self.gone),
            "samples": self.samples,
        }


# --------------------------------------------------------------------------- Ray head
def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: the sockets stay bound until all are picked (ports taken
    one by one can repeat; a head once got the same one for two components and failed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# RayHead.floor's two Pythons: the least a driver does (FLOOR_DRIVER), and one bare
# worker per CPU held until a file appears (FLOOR_WORKERS num_cpus path)
FLOOR_DRIVER = """import ray, pyarrow
ray.init(log_to_driver=False)
ray.get(ray.remote(lambda: 0).remote())
"""
FLOOR_WORKERS = """import os, sys, time, ray
ray.init(log_to_driver=False)
@ray.remote(num_cpus=1)
def hold(go):
    while not os.path.exists(go):
        time.sleep(0.1)
ray.get([hold.remote(sys.argv[2]) for _ in range(int(sys.argv[1]))])
"""


class RayHead:
    """A Ray head of the benchmark's own (``ray start --head``), in a temp dir of
    its own so its processes are told apart from any other Ray on the machine,
    and stopped by pid (``ray stop`` would stop every Ray on the machine)."""

    def __init__(self, num_cpus: int, object_store_gib: float | None, worker_niceness: int):
        self.num_cpus = num_cpus
        self.object_store_gib = object_store_gib
        self.worker_niceness = worker_niceness
        self.extra_env: dict = {}  # e.g. PYTHONPATH: which gymray its workers import
        self.address: str | None = None
        self.port: int | None = None
        self.temp_dir: str | None = None
        self._daemons: set[int] = set()

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness=str(self.worker_niceness))
        env.update(self.extra_env)
        return env

    def start(self) -> dict:
        # short: the temp dir holds the head's Unix sockets (108-byte path limit)
        self.temp_dir = tempfile.mkdtemp(prefix="gbr-", dir="/tmp")
        port, client, dashboard, agent = _free_ports(4)
        ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmd = [
            ray_bin, "start", "--head", f"--num-cpus={self.num_cpus}",
            "--include-dashboard=false", f"--port={port}", f"--temp-dir={self.temp_dir}",
            "--node-ip-address=127.0.0.1", f"--ray-client-server-port={client}",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.object_store_gib:
            cmd.append(f"--object-store-memory={int(self.object_store_gib * GIB)}")
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
            self.stop()
            raise RuntimeError("ray start failed; its output is above")
        self.address = f"127.0.0.1:{port}"
        self.port = port
        seconds = time.perf_counter() - t0
        self.daemons(refresh=True)
        return {
            "address": self.address,
            "temp_dir": self.temp_dir,
            "num_cpus": self.num_cpus,
            "worker_niceness": self.worker_niceness,
            "object_store_gib": self.object_store_gib or "Ray's default",
            "start_seconds": round(seconds, 2),
        }

    def daemons(self, refresh: bool = False) -> set[int]:
        """The head's own processes (their command lines name its temp dir); the
        workers are found as their children."""
        if refresh or not self._daemons:
            if self.temp_dir:
                mark = self.temp_dir.rstrip("/") + "/session_"
                gcs = f":{self.port} "  # the Ray client server names the GCS, not the dir
                mine = _ancestors()
                found = set()
                for p in os.listdir("/proc"):
                    if not p.isdigit() or int(p) in mine:
                        continue
                    cmd = _cmdline(int(p)) + " "
                    if mark in cmd or ("ray.util.client.server" in cmd and gcs in cmd):
                        found.add(int(p))
                self._daemons = found
        return set(self._daemons)

    def tree(self) -> set[int]:
        procs = _all_processes()
        children: dict[int, list[int]] = {}
        for pid, st in procs.items():
            children.setdefault(st[0], []).append(pid)
        todo, seen = list(self.daemons(refresh=True)), set()
        mine = _ancestors()
        while todo:
            p = todo.pop()
            if p not in seen and p in procs and p not in mine:
                seen.add(p)
                todo.extend(children.get(p, ()))
        return seen

    def idle_cpu(self, seconds: float = 5.0) -> dict:
        """CPU the idle head uses (its daemons tick on their own)."""
        m = Meter(self.daemons).start()
        time.sleep(seconds)
        s = m.stop()
        return {
            "seconds": s["window_seconds"],
            "cpu_seconds": s["cpu_seconds"],
            "cpu_seconds_per_second": round(s["cpu_seconds"] / s["window_seconds"], 3),
            "rss_sum_gib": s["peak_rss_sum_gib"],
            "pss_sum_gib": s["peak_pss_sum_gib"],
            "processes": s["processes_seen"],
        }

    def floor(self, runs: int = 3) -> dict:
        """What Ray itself costs, whatever the tool on it: the least a driver pays (a
        Python that imports Ray and pyarrow, connects to this head, runs one task and
        exits: best of ``runs``), the PSS of the head with one bare worker per CPU (a
        task that only sleeps), and the CPU those workers took to start. A run's driver
        share and peak PSS are read against these: gymray's part is what is above them."""
        env = {**self.env(), "RAY_ADDRESS": self.address, "OPENBLAS_NUM_THREADS": "1"}
        drivers = (run_child([sys.executable, "-c", FLOOR_DRIVER], role="driver", env=env)
                   for _ in range(runs))  # fmt: skip
        cpu = [d["process_cpu_seconds"] for d in drivers]
        go = Path(tempfile.mkdtemp(prefix="gbr-floor-")) / "go"
        hold = [sys.executable, "-c", FLOOR_WORKERS, str(self.num_cpus), str(go)]
        holder = subprocess.Popen(hold, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.time() + 120
            while True:  # every bare worker started and imported (their title says so)
                workers = {p for p in self.tree() if _cmdline(p).startswith("ray::hold")}
                if len(workers) >= self.num_cpus or time.time() > deadline:
                    break
                time.sleep(0.5)
            time.sleep(1.0)
            mem = {p: pss_and_private(p) for p in self.tree()}
            mem = {p: m for p, m in mem.items() if m}
            started = [st[1] for st in map(_stat, workers) if st]  # start-up: they only wait
        finally:
            go.touch()
            holder.wait(60)
            shutil.rmtree(go.parent, ignore_errors=True)
        each = [mem[p] for p in workers if p in mem]

        def mean_mib(i: int) -> float | None:  # (0: PSS, 1: private) of a bare worker
            return round(sum(m[i] for m in each) / len(each) / MIB, 1) if each else None

        return {
            "driver_cpu_seconds": min(cpu),
            "driver_cpu_seconds_all": cpu,
            "bare_workers": len(each),
            "pss_sum_gib": round(sum(m[0] for m in mem.values()) / GIB, 3),
            "worker_pss_mib": mean_mib(0),
            "worker_private_mib": mean_mib(1),
            "workers_start_cpu_seconds": round(sum(started), 2),
        }

    def stop(self, keep_logs: Path | None = None) -> dict:
        """SIGTERM the head's processes, SIGKILL what is left after 15 s; with
        ``keep_logs``, copy the session's logs there first (a failed run)."""
        if keep_logs and self.temp_dir:
            for logs in Path(self.temp_dir).glob("session_*/logs"):
                shutil.copytree(logs, keep_logs / logs.parent.name, dirs_exist_ok=True)
        pids = self.tree() if self.temp_dir else set()
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        left = pids
        while left and time.time() < deadline:
            time.sleep(0.25)
            left = {p for p in left if _alive(p)}
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        still = {p for p in self.tree()} if self.temp_dir else set()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return {"stopped": len(pids), "killed": len(left), "left": sorted(still)}


def _ancestors() -> set[int]:
    """This process and its ancestors (never the head's, never to be stopped)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        st = _stat(pid)
        pid = st[0] if st else 1
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    if st is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- measured runs
def run_child(
    cmd: list[str],
    *,
    role: str,
    head: RayHead | None = None,
    env: dict | None = None,
    interval: float = 0.2,
    after: float = 0.0,
    log: Path | None = None,
    pss_every: int = 5,
) -> dict:
    """Run ``cmd`` (its own process) under a :class:`Meter`, wait for it with
    ``wait4`` (its exact CPU and peak RSS), and return the last JSON line it
    printed together with the measures. ``after`` seconds are waited after it
    exits before the window closes (a CLI's job workers being torn down)."""
    holder: dict = {}
    roots = head.daemons if head else (lambda: set())
    meter = Meter(roots, driver=lambda: holder.get("pid"), interval=interval, pss_every=pss_every)
    meter.start()
    t0 = time.perf_counter()
    err = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=tempfile.gettempdir()
        )
        holder["pid"] = proc.pid
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            err.close()
    if after:
        time.sleep(after)
    cpu = ru.ru_utime + ru.ru_stime
    m = meter.stop(exact={proc.pid: (role, cpu)})
    if proc.returncode:
        tail = log.read_text()[-4000:] if log and log.exists() else ""
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}\n{tail}")
    lines = out.decode().strip().splitlines()
    result = _last_json(lines)
    if not result and log:  # keep what it printed instead: the check below needs its counts
        with open(log, "ab") as f:
            f.write(b"\n--- stdout (no JSON document found) ---\n" + out)
    return {
        "result": result,
        "wall_seconds": round(wall, 2),
        "process_cpu_seconds": round(cpu, 2),
        "process_peak_rss_gib": round(ru.ru_maxrss * 1024 / GIB, 3),
        "measures": m,
    }


def _last_json(lines: list[str]) -> dict:
    """The JSON document the child printed last (one line, or an indented block)."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
    return {}


class Driver:
    """A Python process connected to the head (``prepare_driver.py``) that calls
    ``gymray.prepare`` on request: the first call is cold (Ray Data starts its
    workers for this job), later ones warm."""

    def __init__(self, head: RayHead, log: Path):
        self.head, self.log = head, log
        self.err = open(log, "ab")
        env = {**head.env(), "RAY_ADDRESS": head.address}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "prepare_driver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env,
            cwd=tempfile.gettempdir(), text=True,
        )  # fmt: skip
        self.ready = self._reply()
        self.ready["start_seconds"] = round(time.perf_counter() - t0, 2)

    def _reply(self) -> dict:
        while True:  # skip anything else a library printed on stdout
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise RuntimeError(f"prepare_driver.py exited; see {self.log}")
            if line.startswith("{"):
                try:
                    reply = json.loads(line)
                    break
                except ValueError:
                    pass
        if "error" in reply:
            raise RuntimeError(f"prepare failed: {reply['error']}; see {self.log}")
        return reply

    def prepare(self, algo: str, kwargs: dict, interval: float = 0.2) -> dict:
        meter = Meter(self.head.daemons, driver=lambda: self.proc.pid, interval=interval).start()
        self.proc.stdin.write(json.dumps({"algo": algo, "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        m = meter.stop()
        return {"result": reply, "wall_seconds": reply["seconds"], "measures": m}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


# --------------------------------------------------------------------------- compare
def line_multiset_digest(paths: list[Path]) -> tuple[int, str]:
    """(line count, digest of the sorted per-line hashes): equal digests mean equal
    multisets of lines (streamed: a line's 16-byte hash is all that is kept)."""
    hashes: list[bytes] = []
    for p in paths:
        if not p.is_file():
            continue
        with open(p, "rb") as f:
            for line in f:
                hashes.append(hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).digest())
    hashes.sort()
    h = hashlib.sha256()
    for x in hashes:
        h.update(x)
    return len(hashes), h.hexdigest()


def gymray_lines(result: dict) -> list[Path]:
    paths = result.get("paths") or {}
    return [Path(paths[k]) for k in ("train", "val") if paths.get(k)]


# --------------------------------------------------------------------------- summaries
def side(run: dict) -> dict:
    """The figures of one measured run, flat."""
    m = run["measures"]
    out = {
        "wall_seconds": run["wall_seconds"],
        "cpu_seconds": m["cpu_seconds"],
        "cpu_seconds_by_role": m["cpu_seconds_by_role"],
        "driver_share": m["driver_share"],
        "peak_rss_sum_gib": m["peak_rss_sum_gib"],
        "peak_pss_sum_gib": m["peak_pss_sum_gib"],
        "rss_sum_at_start_gib": m["rss_sum_at_start_gib"],
        "peak_driver_rss_gib": m["peak_driver_rss_gib"],
        # the per-worker target: what one process of each role held alone, at most
        "peak_private_mib_of_one_process_by_role": m.get("peak_private_mib_of_one_process_by_role"),
        # the same without the object store's pages a process happens to map alone
        "peak_private_mib_outside_object_store_by_role": m.get(
            "peak_private_mib_outside_object_store_by_role"
        ),
        "other_cpu_seconds": m["other_cpu_seconds"],
        "harness_cpu_seconds": m["harness_cpu_seconds"],
        "machine_before": run.get("settle"),
    }
    return out


WORKER_ROLES = ("map workers", "workers: start-up/idle", "shuffle + sort", "other ray tasks")
WORKER_PRIVATE_MAX_MIB = 300  # issue 12: per-worker private memory at default settings


def worker_private_mib(g: dict) -> tuple[float | None, float | None]:
    """The most private memory one worker process held (any task, idle included):
    (outside the object store, with its pages of the object store)."""
    out = []
    for key in ("peak_private_mib_outside_object_store_by_role",
                "peak_private_mib_of_one_process_by_role"):  # fmt: skip
        roles = g.get(key) or {}
        out.append(max((v for k, v in roles.items() if k in WORKER_ROLES), default=None))
    return out[0], out[1]


def memory_verdict(g: dict) -> dict:
    """Issue 12's per-worker target for one measured side. The issue means a worker's
    own memory; the object store's pages it maps alone are reported beside it."""
    own, with_store = worker_private_mib(g)
    limit = WORKER_PRIVATE_MAX_MIB
    return {
        f"worker_private<{limit}MiB": own is not None and own < limit,
        f"worker_private_with_object_store_pages<{limit}MiB": with_store is not None
        and with_store < limit,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def cpu_model() -> dict:
    """The processor, from /proc/cpuinfo where there is one: figures from two machines
    differ by more than any change measured here (this VM has moved between models that
    run the same loop 1.3-2.1x apart), so a result says which one it ran on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None}
    first = text.split("\n\n")[0].splitlines()  # the first processor's fields
    fields = {k.strip(): v.strip() for k, _, v in (x.partition(":") for x in first)}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name"),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "sha_ni", "bmi2"}),
    }


def environment(driver_ready: dict | None = None) -> dict:
    import orjson

    env = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "orjson": orjson.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        **cpu_model(),
        "host_memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
    }
    try:
        import ray

        import gymray

        pkg = Path(gymray.__file__).resolve().parent
        env["ray"] = ray.__version__
        env["gymray"] = gymray.__version__
        env["gymray_file"] = str(Path(gymray.__file__).resolve())
        h = hashlib.sha256()
        for f in sorted(pkg.rglob("*.py")):
            h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
        env["gymray_sources_sha256"] = h.hexdigest()[:16]
        git = ["git", "-C", str(pkg.parent)]
        env["git_head"] = subprocess.run(
            git + ["rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        env["git_dirty_gymray"] = bool(
            subprocess.run(
                git + ["status", "--porcelain", "--", "gymray"], capture_output=True, text=True
            ).stdout.strip()
        )
    except Exception as e:  # noqa: BLE001 (best effort)
        env["gymray_error"] = repr(e)
    if driver_ready:
        env["gymray_file_in_driver"] = driver_ready.get("gymray_file")
    return env


def portable(text: str, data_dir: Path | None = None, checkouts: tuple[str, ...] = ()) -> str:
    """Result files name no machine's paths: the repo, ../shared, the data dir, the
    interpreter and the temp dir become <repo>, <shared>, <data>, <python>, <tmp>, and
    other ``checkouts`` gymray was imported from (a run from a worktree, with the venv's
    editable install elsewhere) <gymray-checkout>."""
    places = [(c, "<gymray-checkout>") for c in checkouts if Path(c) != REPO.resolve()]
    places += [(str(Path(sys.executable).parent.parent), "<python>"), (str(REPO), "<repo>"),
              (str(SHARED.resolve()), "<shared>"), (str(SHARED), "<shared>"),
              (str(data_dir or DEFAULT_DATA), "<data>"), (tempfile.gettempdir(), "<tmp>")]  # fmt: skip
    for path, name in sorted(places, key=lambda p: -len(p[0])):  # the longest first
        text = text.replace(path, name)
    return text


def save(
    summary: dict, name: str, tag: str, no_save: bool, data_dir: Path | None = None
) -> Path | None:
    env = summary.get("environment") or {}
    files = [env.get(k) for k in ("gymray_file", "gymray_file_in_driver")]
    checkouts = tuple(str(Path(f).parents[1]) for f in files if isinstance(f, str) and "/" in f)
    text = portable(json.dumps(summary, indent=1), data_dir, checkouts)
    if no_save:
        print(text, flush=True)
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}{'-' + tag if tag else ''}.json"
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- one run
def parse_sets(items: list[str]) -> dict:
    """``key=value`` settings as ``gymray.prepare`` keywords (values parsed as JSON
    when they are JSON, as the CLI's OmegaConf would; else strings)."""
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run_suite(
    a: argparse.Namespace,
    algo: str,
    corpus: Path,
    cases: list[dict],
    baseline_cmd: Callable[[dict, Path], list[str]],
    minimal_cmd: Callable[[dict, Path], list[str]] | None = None,
) -> tuple[dict, dict]:
    """Measure, in one run, for every case (``{"name", "slug", "sets"}``):

    1. the single-process baselines (full, and the minimal loop when given, then
       as many processes of it at once as the head has CPUs), half of
       ``--baseline-runs`` before the head starts, the rest after it stops (they
       never share the machine with an idle Ray);
    2. ``ray start --head``; per case, a driver connected to it calling
       ``gymray.prepare`` ``--runs`` times (cold, then warm), then ``--cli-runs``
       runs of ``python -m gymray.run ... --prepare-only`` with ``RAY_ADDRESS``
       set (each a new Ray job: cold workers every time);
    3. the head stopped (its processes only).

    Returns (per-case raw runs, head info)."""

    # Stopped by SIGTERM or SIGINT (even when started in the background, where
    # SIGINT is ignored): unwind, so that the head is stopped.
    def _stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    work = a.data_dir / "runs" / f"{algo}-{os.getpid()}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    raw = {c["name"]: {"baseline": [], "minimal": [], "minimal_parallel": [], "prepare": [],
                       "cli": [], "check": {}} for c in cases}  # fmt: skip
    before = (a.baseline_runs + 1) // 2

    def keep(c: dict, kind: str, run: dict) -> None:
        """Every measured run, also appended to DATA/runs/.../logs/runs.jsonl as it
        ends (an interrupted run keeps what it measured)."""
        raw[c["name"]][kind].append(run)
        with open(logs / "runs.jsonl", "a") as f:
            f.write(json.dumps({"case": c["name"], "kind": kind, **run}) + "\n")

    def singles(n: int, first: bool) -> None:
        for c in cases:
            for i in range(n):
                if "baseline" not in a.skip:
                    kept = first and i == 0  # compared with gymray's output later
                    out = work / c["slug"] / ("baseline-keep" if kept else "baseline")
                    _clean(out)
                    quiet = settle(corpus, a.quiet_cores, a.quiet_wait)
                    say(f"{c['name']}: full single-process baseline ...")
                    run = run_child(baseline_cmd(c, out), role="baseline process",
                                    interval=a.sample_interval, log=logs / "baseline.log", pss_every=1)  # fmt: skip
                    run["settle"] = quiet
                    keep(c, "baseline", run)
                    say(f"  {run['result']['seconds']} s timed, {run['wall_seconds']} s process")
                    if not kept:
                        _clean(out)
                if minimal_cmd and "minimal" not in a.skip:
                    out = work / c["slug"] / "minimal" / "out.jsonl"
                    loop(c, "minimal", "minimal loop", minimal_cmd(c, out))
                    if a.num_cpus > 1:  # what the head's cores can do at best, without Ray
                        cmd = minimal_cmd(c, out) + ["--processes", str(a.num_cpus)]
                        loop(c, "minimal_parallel", f"minimal loop, {a.num_cpus} processes", cmd)

    def loop(c: dict, kind: str, label: str, cmd: list[str]) -> None:
        out = work / c["slug"] / "minimal"
        out.mkdir(parents=True, exist_ok=True)
        quiet = settle(corpus, a.quiet_cores, a.quiet_wait)
        say(f"{c['name']}: {label} ...")
        run = run_child(cmd, role="baseline process", interval=a.sample_interval,
                        log=logs / "minimal.log", pss_every=1)  # fmt: skip
        run["settle"] = quiet
        keep(c, kind, run)
        say(f"  {run['result']['seconds']} s timed, {run['wall_seconds']} s process")
        _clean(out)

    def check(c: dict, result: dict, label: str) -> None:
        r = raw[c["name"]]
        kept = work / c["slug"] / "baseline-keep"
        if a.no_compare or not r["baseline"] or not kept.exists():
            return
        b = r["baseline"][0]["result"]
        if "counts" not in result:
            raise RuntimeError(
                f"{c['name']} {label}: gymray printed no JSON with counts (see its log)"
            )
        gc, bc = result["counts"], b["counts"]
        gn, gd = line_multiset_digest(gymray_lines(result))
        bn, bd = line_multiset_digest([Path(b["train"])])
        r["check"][label] = {
            "same_counts": gc["input_lines"] == bc["input_lines"]
            and gc["used"] == bc["used"]
            and gc["filtered"] == bc["filtered"]
            and gc["rejected"] == bc["rejected"]
            and sum(gc["records"].values()) == bc["records"],
            "gymray_lines": gn,
            "baseline_lines": bn,
            "same_lines_multiset": gd == bd,
        }
        say(f"  check vs baseline: {r['check'][label]}")

    singles(before, first=True)
    head = RayHead(a.num_cpus, a.object_store_gib, a.worker_niceness)
    extra = parse_sets(a.set)
    info: dict = {}
    if not {"prepare", "cli"} <= set(a.skip):
        say("ray start --head ...")
        try:
            info = head.start()
            info["idle"] = head.idle_cpu(5.0)
            say(f"  head at {info['address']}, idle {info['idle']}")
            info["floor"] = head.floor()
            say(f"  Ray's floor: {info['floor']}")
            for c in cases:
                r = raw[c["name"]]
                sets = parse_sets(c["sets"])
                if "prepare" not in a.skip:
                    drv = Driver(head, logs / f"driver-{c['slug']}.log")
                    r["driver"] = drv.ready
                    try:
                        for i in range(a.runs):
                            out = work / c["slug"] / "prepare"
                            _clean(out)
                            quiet = settle(corpus, a.quiet_cores, a.quiet_wait)
                            say(
                                f"{c['name']}: gymray.prepare #{i + 1} ({'cold' if i == 0 else 'warm'}) ..."
                            )
                            kwargs = {"input": str(corpus), "output": str(out), "overwrite": True,
                                      **sets, **extra}  # fmt: skip
                            run = drv.prepare(algo, kwargs, a.sample_interval)
                            run["settle"] = quiet
                            keep(c, "prepare", run)
                            say(
                                f"  {run['wall_seconds']} s, {run['measures']['cpu_seconds']} CPU-s"
                            )
                            if i == 0:
                                check(c, run["result"], "prepare")
                            _clean(out)
                    finally:
                        drv.close()
                    time.sleep(2)  # the job's workers go away
                if "cli" not in a.skip:
                    env = {**head.env(), "RAY_ADDRESS": head.address}
                    for i in range(a.cli_runs):
                        out = work / c["slug"] / "cli"
                        _clean(out)
                        quiet = settle(corpus, a.quiet_cores, a.quiet_wait)
                        say(f"{c['name']}: python -m gymray.run #{i + 1} ...")
                        cmd = [sys.executable, "-m", "gymray.run", algo, f"input={corpus}",
                               f"output={out}", "overwrite=true", *c["sets"], *a.set,
                               "--prepare-only", "--json"]  # fmt: skip
                        run = run_child(cmd, role="driver", head=head, env=env, after=1.0,
                                        interval=a.sample_interval, log=logs / f"cli-{c['slug']}.log")  # fmt: skip
                        run["settle"] = quiet
                        # --json: {gymray, command, ok, exit_code, error, dataset: {...}, job}
                        run["result"] = run["result"].get("dataset") or run["result"]
                        keep(c, "cli", run)
                        say(f"  {run['wall_seconds']} s, {run['measures']['cpu_seconds']} CPU-s")
                        if i == 0:
                            check(c, run["result"], "cli")
                        _clean(out)
        except BaseException:
            # keep the head's logs (worker deaths are explained there), then unwind
            info["stop"] = head.stop(keep_logs=logs / "ray")
            say(f"head stopped after a failure; its logs are in {logs / 'ray'}")
            raise
        else:
            info["stop"] = head.stop()
            say(f"head stopped: {info['stop']}")
    for c in cases:
        _clean(work / c["slug"] / "baseline-keep")
    singles(a.baseline_runs - before, first=False)
    if not a.keep_output:
        for c in cases:
            _clean(work / c["slug"])
    info["logs"] = str(logs)
    if not a.keep_output:
        info["logs"] += " (deleted)"
        _clean(work)
    return raw, info


def summarize_case(r: dict) -> dict:
    """Figures and ratios of one case from its raw runs."""
    out: dict = {}
    # the fastest run of each loop (a shared machine's noise only slows a run down)
    full = min(r["baseline"], key=lambda x: x["result"]["seconds"]) if r["baseline"] else None
    mini = min(r["minimal"], key=lambda x: x["result"]["seconds"]) if r["minimal"] else None
    many = r.get("minimal_parallel") or []
    par = min(many, key=lambda x: x["result"]["seconds"]) if many else None

    def single(run: dict | None, runs: list[dict]) -> dict | None:
        if run is None:
            return None
        res, m = run["result"], run["measures"]
        return {
            "timed_seconds": res["seconds"],
            "timed_cpu_seconds": res["cpu_seconds"],
            "process_wall_seconds": run["wall_seconds"],
            "process_cpu_seconds": run["process_cpu_seconds"],
            # sampled from /proc (ru_maxrss of a child also counts the harness's pages
            # it had at fork, before exec)
            "peak_rss_gib": m["peak_rss_sum_gib"],
            "peak_pss_gib": m["peak_pss_sum_gib"],
            "ru_maxrss_gib": run["process_peak_rss_gib"],
            "other_cpu_seconds": m["other_cpu_seconds"],
            "machine_before": run.get("settle"),
            "all_timed_seconds": [x["result"]["seconds"] for x in runs],
            "all_process_wall_seconds": [x["wall_seconds"] for x in runs],
            "records": res.get("counts", {}).get("records", res.get("records")),
            **({"counts": res["counts"]} if "counts" in res else {}),
            **(
                {
                    k: res[k]
                    for k in res
                    if k.endswith("_seconds") and k not in ("seconds", "cpu_seconds")
                }
            ),
        }

    out["baseline_full"] = single(full, r["baseline"])
    out["minimal_loop"] = single(mini, r["minimal"])
    out["minimal_loop_parallel"] = single(par, many)
    if par:
        out["minimal_loop_parallel"]["processes"] = par["result"]["processes"]
    if r["prepare"]:
        cold, warm = r["prepare"][0], r["prepare"][1:]
        out["prepare"] = {
            "driver": r.get("driver"),
            "counts": cold["result"]["counts"],
            "cold": side(cold),
            "warm": side(min(warm, key=lambda x: x["wall_seconds"])) if warm else None,
            "all_wall_seconds": [x["wall_seconds"] for x in r["prepare"]],
            "cold_by_title": cold["measures"]["cpu_seconds_by_title"],
            "warm_by_title": min(warm, key=lambda x: x["wall_seconds"])["measures"][
                "cpu_seconds_by_title"
            ]
            if warm
            else None,  # fmt: skip
            "warm_rss_gib_by_role_at_peak": min(warm, key=lambda x: x["wall_seconds"])["measures"][
                "rss_gib_by_role_at_peak"
            ]
            if warm
            else None,  # fmt: skip
        }
    if r["cli"]:
        out["cli"] = {
            "counts": r["cli"][0]["result"].get("counts"),
            "cold": side(r["cli"][0])
            | {"process_peak_rss_gib": r["cli"][0]["process_peak_rss_gib"]},
            "warm": side(r["cli"][1])
            | {"process_peak_rss_gib": r["cli"][1]["process_peak_rss_gib"]}
            if len(r["cli"]) > 1
            else None,
            "all_wall_seconds": [x["wall_seconds"] for x in r["cli"]],
            "cold_by_title": r["cli"][0]["measures"]["cpu_seconds_by_title"],
        }
    out["check"] = r["check"]
    ratios: dict = {}
    fb, mb, pb = out["baseline_full"], out["minimal_loop"], out["minimal_loop_parallel"]
    for kind in ("prepare", "cli"):
        for when in ("cold", "warm"):
            g = (out.get(kind) or {}).get(when)
            if not g:
                continue
            # prepare is timed around the call: compare with the loops' timed part;
            # the CLI end to end: with the loops' whole process (interpreter included)
            wall = "timed_seconds" if kind == "prepare" else "process_wall_seconds"
            cpu = "timed_cpu_seconds" if kind == "prepare" else "process_cpu_seconds"
            ratios[f"{kind}_{when}"] = {
                "wall_vs_full": ratio(fb and fb[wall], g["wall_seconds"]),
                "wall_vs_minimal": ratio(mb and mb[wall], g["wall_seconds"]),
                # against as many loop processes as the head has CPUs: 1.0 is as fast as
                # the cores allow with this loop, without Ray
                "wall_vs_minimal_parallel": ratio(pb and pb[wall], g["wall_seconds"]),
                "cpu_vs_full": ratio(g["cpu_seconds"], fb and fb[cpu]),
                "cpu_vs_minimal": ratio(g["cpu_seconds"], mb and mb[cpu]),
                "driver_share": g["driver_share"],
            }
    out["ratios"] = ratios
    warm = (out.get("prepare") or {}).get("warm")
    if warm and out.get("cli"):
        # issue 12's cold tax: a fresh process's whole run against a warm prepare
        out["ratios"]["cli_over_warm_prepare"] = [
            ratio(w, warm["wall_seconds"]) for w in out["cli"]["all_wall_seconds"]
        ]
    return out


def cold_verdict(c: dict, most: float) -> dict:
    """The cold-tax target: the first CLI run at most ``most`` x the faster warm
    prepare; where a run had no warm prepare, none."""
    each = c["ratios"].get("cli_over_warm_prepare")
    return {f"first_cli<={most}x_warm_prepare": each[0] <= most} if each else {}


def summary(benchmark: str, t0: float, raw: dict, head: dict, corpus: Path, made: dict,
            make_args: list[str], targets: dict, cases: list[dict]) -> dict:  # fmt: skip
    """The result file's body, the same for every benchmark."""
    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_seconds": round(time.time() - t0),
        "argv": sys.argv[1:],
        "environment": environment(
            next((r.get("driver") for r in raw.values() if r.get("driver")), None)
        ),
        "corpus": corpus_info(corpus, made, make_args),
        "head": head,
        "targets": targets,
        "cases": with_floor(
            {c["name"]: summarize_case(raw[c["name"]]) for c in cases}, head.get("floor")
        ),  # fmt: skip
    }


def with_floor(cases: dict, floor: dict | None) -> dict:
    """Each CLI run's ratios, plus the share of its CPU that Ray's bare driver would be
    (``RayHead.floor``): the driver share no fresh process on Ray goes below. (Not for
    ``gymray.prepare`` in a connected driver, which paid its imports before the call.)"""
    for c in cases.values() if floor else ():
        for when in ("cold", "warm"):
            if (c.get("cli") or {}).get(when):
                c["ratios"][f"cli_{when}"]["ray_floor_driver_share"] = ratio(
                    floor["driver_cpu_seconds"], c["cli"][when]["cpu_seconds"]
                )
    return cases


def table(summary: dict) -> str:
    """A plain-text table of the figures (printed at the end of a run)."""
    rows = [
        "case | side | wall s | x full | x minimal | CPU-s | CPU/full | driver % | "
        "workers / shuffle / daemons CPU-s | peak RSS / PSS GiB | worker MiB own (+ store) | "
        "others' cores"
    ]
    for name, c in summary["cases"].items():
        for label, s in (
            ("full loop", c.get("baseline_full")),
            ("minimal loop", c.get("minimal_loop")),
            (f"minimal loop x{(c.get('minimal_loop_parallel') or {}).get('processes')}",
             c.get("minimal_loop_parallel")),
        ):  # fmt: skip
            if s:
                rows.append(
                    f"{name} | {label} | {s['timed_seconds']} ({s['process_wall_seconds']} proc) | | | "
                    f"{s['timed_cpu_seconds']} ({s['process_cpu_seconds']}) | | | | "
                    f"{s['peak_rss_gib']} / {s['peak_pss_gib']} | | "
                    f"{round(s['other_cpu_seconds'] / s['process_wall_seconds'], 2)}"
                )
        for kind in ("prepare", "cli"):
            for when in ("cold", "warm"):
                g = (c.get(kind) or {}).get(when)
                if not g:
                    continue
                rt = c["ratios"][f"{kind}_{when}"]
                roles = g["cpu_seconds_by_role"]
                workers = sum(
                    v for k, v in roles.items() if k.startswith(("map", "workers", "other ray"))
                )
                own, with_store = worker_private_mib(g)
                rows.append(
                    f"{name} | {kind} {when} | {g['wall_seconds']} | {rt['wall_vs_full']} | "
                    f"{rt['wall_vs_minimal']} | {g['cpu_seconds']} | {rt['cpu_vs_full']} | "
                    f"{round(100 * (g['driver_share'] or 0), 1)} | {round(workers, 1)} / "
                    f"{roles.get('shuffle + sort', 0)} / {roles.get('ray daemons', 0)} | "
                    f"{g['peak_rss_sum_gib']} / {g['peak_pss_sum_gib']} | "
                    f"{own} ({with_store}) | "
                    f"{round(g['other_cpu_seconds'] / g['wall_seconds'], 2)}"
                )
        each = c["ratios"].get("cli_over_warm_prepare")
        if each:
            rows.append(f"{name} | each CLI run / the faster warm prepare: {each}")
        vs_many = {k: rt["wall_vs_minimal_parallel"] for k, rt in c["ratios"].items()
                   if isinstance(rt, dict) and rt.get("wall_vs_minimal_parallel")}  # fmt: skip
        if vs_many:
            rows.append(f"{name} | speed / the minimal loop's processes at once: {vs_many}")
    floor = summary["head"].get("floor")
    if floor:
        rows.append(
            f"Ray's floor | a bare driver {floor['driver_cpu_seconds']} CPU-s; the head with "
            f"{floor['bare_workers']} bare workers {floor['pss_sum_gib']} GiB PSS "
            f"({floor['worker_pss_mib']} MiB PSS, {floor['worker_private_mib']} private each), "
            f"which took {floor['workers_start_cpu_seconds']} CPU-s to start"
        )
    return "\n".join(rows)
