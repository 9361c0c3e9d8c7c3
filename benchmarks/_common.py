"""Shared pieces of the gymray benchmarks: corpus building, Ray start-up,
memory sampling, output comparison and result files.

Not part of the package and not run in CI; see ``benchmarks/README.md``.
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
import subprocess
import sys
import threading
import time
from pathlib import Path

MAKE_CORPUS = Path(os.environ.get("GYMRAY_MAKE_CORPUS", "/work/shared/bench/make_corpus.py"))
DEFAULT_DATA = Path(os.environ.get("GYMRAY_BENCH_DATA", "/tmp/gymray-bench"))
RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1 << 30
PSS_EVERY = 10  # samples between PSS reads (2 s at the default interval)


# --------------------------------------------------------------------------- args
def common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--shards", type=int, default=8, help="rollout files in the corpus")
    ap.add_argument("--seed", type=int, default=0, help="make_corpus.py --seed")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help=f"where corpora and outputs go (default {DEFAULT_DATA}; keep it outside the repo)",
    )
    ap.add_argument("--num-cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    ap.add_argument(
        "--object-store-gib",
        type=float,
        default=None,
        help="ray.init(object_store_memory=...) in GiB (default: Ray's default)",
    )
    ap.add_argument(
        "--worker-niceness",
        type=int,
        default=0,
        help="RAY_worker_niceness for the local Ray (Ray's default is 15: its workers then "
        "yield the CPU to everything else on a shared machine, the baseline included; "
        "0 gives both sides the same priority)",
    )
    ap.add_argument(
        "--block-bytes",
        type=int,
        default=None,
        help="gymray ray.block_bytes (raw bytes of lines per block; default: gymray's)",
    )
    ap.add_argument(
        "--skip",
        choices=("none", "gymray", "baseline"),
        default="none",
        help="leave one side out (e.g. to profile the other)",
    )
    ap.add_argument(
        "--data-context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a ray.data.DataContext field in this driver before prepare (repeatable; "
        "VALUE is JSON), e.g. op_resource_reservation_enabled=false",
    )
    ap.add_argument("--no-compare", action="store_true", help="do not compare the output lines")
    ap.add_argument("--keep-output", action="store_true", help="keep the outputs after the run")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--no-save", action="store_true", help="print the summary, write no file")
    ap.add_argument("--sample-interval", type=float, default=0.2, help="memory sampling period (s)")
    ap.add_argument(
        "--runs",
        type=int,
        default=1,
        help="time each side this many times, alternating (same Ray); the best of each "
        "is reported (a shared machine's noise only ever slows a run down)",
    )


# --------------------------------------------------------------------------- corpus
def corpus_summary(path: Path) -> dict | None:
    f = path / "corpus.json"
    if f.is_file():
        try:
            return json.loads(f.read_text())
        except ValueError:
            return None
    return None


def build_corpus(path: Path, make_args: list[str], *, make_corpus: list[str] | None = None) -> dict:
    """Run make_corpus.py into ``path`` unless a complete corpus with the same
    arguments is there already (``corpus.json`` is written last, so a half-built
    corpus is rebuilt)."""
    cmd = make_corpus or [sys.executable, str(MAKE_CORPUS)]
    summary = corpus_summary(path)
    if summary and summary.get("args") == make_args:
        summary["reused"] = True
        return summary
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [str(tmp)] + make_args, check=True, capture_output=True, text=True)
    made = json.loads(out.stdout.strip().splitlines()[-1])
    tmp.rename(path)
    summary = {
        "args": make_args,
        "generator": " ".join(cmd[1:]),
        "build_seconds": round(time.perf_counter() - t0, 1),
        **made,
    }
    (path / "corpus.json").write_text(json.dumps(summary, indent=1))
    summary["reused"] = False
    return summary


def rollout_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.endswith(".jsonl"))


def warm_page_cache(files: list[Path]) -> float:
    """Read the corpus once so neither side pays for the disk (both then read
    from the page cache); returns the seconds it took."""
    t0 = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while f.read(64 << 20):
                pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- ray
def start_ray(num_cpus: int, object_store_gib: float | None, worker_niceness: int = 0) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_worker_niceness"] = str(worker_niceness)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    # address="local": always a new Ray of our own, never a cluster someone else
    # started on this machine with `ray start` (ray.init() would join that one).
    kwargs: dict = {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "log_to_driver": False,
    }
    if object_store_gib:
        kwargs["object_store_memory"] = int(object_store_gib * GIB)
    t0 = time.perf_counter()
    ray.init(**kwargs)
    return {
        "startup_seconds": round(time.perf_counter() - t0, 2),
        "num_cpus": num_cpus,
        "worker_niceness": worker_niceness,
        "object_store_memory_gib": round(ray.cluster_resources()["object_store_memory"] / GIB, 2),
    }


# --------------------------------------------------------------------------- memory
class MemorySampler:
    """Samples, every ``interval`` seconds, the RSS summed over this process, its
    descendants (a local Ray's GCS, raylet and workers) and any process whose
    command line has ``ray::`` or ``raylet`` (workers of a Ray this process
    joined), and the object store's used bytes.

    RSS double-counts pages shared between processes (the object store is
    shared memory that every reader maps); ``private`` is the same sum without
    shared pages (RSS minus ``shared``), and ``pss`` (proportional set size,
    from /proc/PID/smaps_rollup) counts a shared page once over all processes:
    the PSS sum is the memory the run really holds. The peak of each is kept
    separately.
    """

    def __init__(self, interval: float = 0.2, object_store: bool = True):
        import psutil  # ray vendors it (ray/thirdparty_files); import ray first

        self.psutil = psutil
        self.interval = interval
        self.me = psutil.Process()
        self.object_store = object_store
        self._stop = threading.Event()
        self._procs: dict[int, object] = {}
        self.peak_rss = 0
        self.peak_private = 0
        self.peak_driver_rss = 0
        self.peak_object_store = 0
        self.peak_shm = 0
        self.peak_processes = 0
        self.samples = 0
        self.timeline: list[tuple[float, int, int]] = []  # (t, rss sum, object store)
        self._t0 = 0.0
        self._shm0 = _shm_used()
        self._machine0 = _machine_used()
        self.peak_machine = 0
        self._state = None
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds (last seen)
        self._role: dict[int, str] = {}
        self.worker_nice: set[int] = set()
        self.peak_breakdown: list[tuple[str, int]] = []
        self.peak_pss = 0
        self.pss_ok = True
        self.sampler_cpu = 0.0
        self._cpu0: dict[int, float] = {}
        self._busy0 = 0.0
        self.own_cpu = self.machine_cpu = 0.0

    def _discover(self) -> None:
        """This process, its descendants, and the processes of the Ray session this
        process is connected to (its raylet/GCS/agents name the session directory
        on their command line; workers are the raylet's children). Other Ray
        clusters on the machine (someone's tests) are not counted."""
        ps = self.psutil
        found = {self.me.pid: self.me}
        roots = [self.me]
        session = _session_dir()
        if session:
            for p in ps.process_iter(["cmdline"]):
                cmd = " ".join(p.info.get("cmdline") or ())
                if session in cmd and (
                    "raylet" in cmd
                    or "ray::" in cmd
                    or "gcs_server" in cmd
                    or "dashboard" in cmd
                    or "log_monitor" in cmd
                ):
                    found.setdefault(p.pid, p)
                    roots.append(p)
        for r in roots:
            try:
                for c in r.children(recursive=True):
                    found.setdefault(c.pid, c)
            except ps.Error:
                pass
        self._procs = found
        for pid, p in found.items():
            role = self._role.get(pid)
            # A worker's title changes from ray::IDLE to the task or actor it runs.
            if (
                role is None
                or role.startswith("ray worker ray::IDLE")
                or role.endswith("(starting)")
            ):
                self._role[pid] = self._role_of(p)

    def _role_of(self, p) -> str:
        if p.pid == self.me.pid:
            return "driver"
        try:
            cmd = " ".join(p.cmdline())
        except self.psutil.Error:
            return "other"
        if cmd.startswith("ray::") or "default_worker.py" in cmd:
            try:
                self.worker_nice.add(p.nice())
            except self.psutil.Error:
                pass
            # Ray Data's own actors (stats, autoscaling coordinator, shuffle
            # aggregators) are workers too; the title says which.
            return "ray worker " + (cmd.split()[0] if cmd.startswith("ray::") else "(starting)")
        if not cmd:
            return "other"
        parts = cmd.split()
        name = os.path.basename(parts[0])
        if name.startswith("python"):
            name = next((os.path.basename(x) for x in parts[1:] if x.endswith(".py")), name)
        return "ray daemon " + name

    def _object_store_used(self) -> int:
        if not self.object_store:
            return 0
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            if not ray.is_initialized():
                return 0
            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(self._state, timeout_seconds=5)
            return int(reply.store_stats.object_store_bytes_used)
        except Exception:
            self.object_store = False  # an internal API: give up quietly
            return 0

    def sample(self) -> None:
        ps = self.psutil
        if self.samples % 10 == 0:
            self._discover()
        rss = private = 0
        n = 0
        per_proc: list[tuple[str, int]] = []
        pss = 0
        # smaps_rollup makes the kernel walk every page table: ~10 ms per big
        # process, so PSS is read every PSS_EVERY samples only (the sampler's own
        # CPU is reported apart and taken out of the driver's)
        pss_now = self.samples % PSS_EVERY == 0
        for pid, p in list(self._procs.items()):
            try:
                mi = p.memory_info()
            except ps.Error:
                self._procs.pop(pid, None)
                continue
            try:
                t = p.cpu_times()
                self._cpu[pid] = t.user + t.system + t.children_user + t.children_system
            except ps.Error:
                pass
            if self.pss_ok and pss_now:
                try:
                    pss += p.memory_full_info().pss
                except (ps.Error, AttributeError, OSError):
                    self.pss_ok = False
            n += 1
            per_proc.append((self._role.get(pid, "other"), mi.rss))
            rss += mi.rss
            private += mi.rss - getattr(mi, "shared", 0)
            if pid == self.me.pid:
                self.peak_driver_rss = max(self.peak_driver_rss, mi.rss)
        store = self._object_store_used() if self.samples % 5 == 0 else 0
        shm = _shm_used() - self._shm0
        if rss > self.peak_rss:
            self.peak_breakdown = per_proc
        self.peak_rss = max(self.peak_rss, rss)
        if pss_now:
            self.peak_pss = max(self.peak_pss, pss)
        self.peak_private = max(self.peak_private, private)
        self.peak_object_store = max(self.peak_object_store, store)
        self.peak_shm = max(self.peak_shm, shm)
        self.peak_machine = max(self.peak_machine, _machine_used() - self._machine0)
        self.peak_processes = max(self.peak_processes, n)
        self.samples += 1
        self.timeline.append((round(time.perf_counter() - self._t0, 2), rss, store))

    def _run(self) -> None:
        t0 = time.thread_time()
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
        self.sampler_cpu = time.thread_time() - t0

    def __enter__(self) -> MemorySampler:
        self._t0 = time.perf_counter()
        self._busy0 = machine_busy_seconds()
        self._discover()
        self.sample()
        self._cpu0 = dict(self._cpu)
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._discover()
        self.sample()
        self.machine_cpu = machine_busy_seconds() - self._busy0
        self.own_cpu = (
            sum(v - self._cpu0.get(pid, 0.0) for pid, v in self._cpu.items()) - self.sampler_cpu
        )

    def cpu_by_role(self) -> dict:
        """CPU seconds per process role during the run (workers are named by
        their last title: ray::IDLE workers ran tasks earlier)."""
        out: dict[str, float] = {}
        for pid, v in self._cpu.items():
            d = v - self._cpu0.get(pid, 0.0)
            if d < 0.05:
                continue
            r = self._role.get(pid, "other")
            if r == "driver":
                d -= self.sampler_cpu
            if r.startswith("ray worker"):
                title = r[len("ray worker ") :]
                if any(w in title for w in ("Actor", "Aggregator", "Coordinator")):
                    r = "ray workers: Ray Data actors"
                elif "IDLE" in title or "starting" in title:
                    r = "ray workers: idle (title never seen busy)"
                else:
                    r = "ray workers: tasks"
            elif r.startswith("ray daemon"):
                r = r.replace("ray daemon ", "ray daemon: ")
            out[r] = round(out.get(r, 0.0) + d, 1)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def summary(self) -> dict:
        return {
            "peak_rss_sum_gib": round(self.peak_rss / GIB, 3),
            # what the Ray processes held before prepare started (idle daemons and
            # workers, warm ones after an earlier run): peak minus this is the run's own
            "rss_sum_at_start_gib": round(self.timeline[0][1] / GIB, 3) if self.timeline else None,
            "peak_rss_private_sum_gib": round(self.peak_private / GIB, 3),
            # PSS shares each shared page (object store, libraries) among the
            # processes mapping it: the sum is the memory the run really holds
            "peak_pss_sum_gib": round(self.peak_pss / GIB, 3) if self.pss_ok else None,
            "peak_driver_rss_gib": round(self.peak_driver_rss / GIB, 3),
            "peak_object_store_used_gib": round(self.peak_object_store / GIB, 3),
            "peak_dev_shm_growth_gib": round(self.peak_shm / GIB, 3),
            # the whole machine's MemTotal - MemAvailable, above where it stood when
            # prepare started (Ray already up): each physical page once
            "peak_machine_used_growth_gib": round(self.peak_machine / GIB, 3),
            "peak_processes": self.peak_processes,
            "cpu_seconds_own": round(self.own_cpu, 1),
            "cpu_seconds_machine": round(self.machine_cpu, 1),
            "cpu_seconds_by_role": self.cpu_by_role(),
            "sampler_cpu_seconds": round(self.sampler_cpu, 1),
            "worker_nice_values": sorted(self.worker_nice),
            "rss_gib_by_process_at_peak": [
                [role[:60], round(r / GIB, 3)]
                for role, r in sorted(self.peak_breakdown, key=lambda x: -x[1])
            ],
            "samples": self.samples,
        }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    import psutil

    t = psutil.cpu_times()
    return (
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0)
        + getattr(t, "softirq", 0)
        + getattr(t, "steal", 0)
    )


def _session_dir() -> str | None:
    try:
        import ray

        return ray._private.worker.global_worker.node.get_session_dir_path()
    except Exception:
        return None


def _machine_used() -> int:
    """Memory the machine's processes hold (MemTotal - MemAvailable): page cache
    that can be dropped is not counted, shared pages are counted once."""
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for row in f:
                key, value = row.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0
    return info.get("MemTotal", 0) - info.get("MemAvailable", 0)


def _shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def max_rss_self() -> int:
    """Peak RSS of this process in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- baseline child
def run_child(script: Path, args: list[str]) -> dict:
    """Run ``script --_baseline ...`` in a fresh interpreter (so its peak RSS is
    its own, not the Ray driver's) and return the JSON it prints last."""
    t0 = time.perf_counter()
    busy0 = machine_busy_seconds()
    out = subprocess.run(
        [sys.executable, str(script), "--_baseline", *args], capture_output=True, text=True
    )
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError(f"the baseline failed (exit {out.returncode}); its stderr is above")
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_seconds"] = round(wall, 2)
    result["cpu_seconds_machine"] = round(machine_busy_seconds() - busy0, 1)
    return result


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def noise(own: float, machine: float, seconds: float) -> dict:
    """CPU the rest of the machine used while a side ran: other people's tests
    on a shared 2-core box make a run slower, so say how much there was."""
    other = max(0.0, machine - own)
    return {
        "cpu_seconds_own": round(own, 1),
        "cpu_seconds_other_processes": round(other, 1),
        "other_processes_cores_busy": round(other / seconds, 2) if seconds else None,
    }


# --------------------------------------------------------------------------- compare
def line_multiset_digest(paths: list[Path]) -> tuple[int, str]:
    """(line count, sha256 of the sorted lines): equal digests mean equal multisets."""
    lines: list[bytes] = []
    for p in paths:
        if p.is_file():
            data = p.read_bytes()
            if data:
                lines.extend(data.rstrip(b"\n").split(b"\n"))
    lines.sort()
    h = hashlib.sha256()
    for ln in lines:
        h.update(ln)
        h.update(b"\n")
    return len(lines), h.hexdigest()


# --------------------------------------------------------------------------- results
def environment() -> dict:
    import orjson

    env = {
        "python": platform.python_version(),
        "orjson": orjson.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "host_memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
    }
    try:
        import ray

        env["ray"] = ray.__version__
    except ImportError:
        pass
    try:
        import gymray

        pkg = Path(gymray.__file__).resolve().parent
        env["gymray"] = gymray.__version__
        env["gymray_source"] = str(pkg)
        # The package is edited while benchmarks run: name the exact sources measured.
        h = hashlib.sha256()
        for f in sorted(pkg.rglob("*.py")):
            h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
        env["gymray_sources_sha256"] = h.hexdigest()[:16]
        env["git_head"] = subprocess.run(
            ["git", "-C", str(pkg.parent), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except Exception:
        pass
    return env


def save(summary: dict, name: str, tag: str, no_save: bool) -> Path | None:
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if no_save:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}{'-' + tag if tag else ''}.json"
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def rate(nbytes: int, lines: int, seconds: float | None) -> dict:
    if not seconds:
        return {"mb_per_s": None, "lines_per_s": None}
    return {
        "mb_per_s": round(nbytes / 1e6 / seconds, 1),
        "lines_per_s": round(lines / seconds, 1),
    }


def best_of(runs: list[dict]) -> dict:
    """The fastest run; ``peak`` memory figures are the worst over all runs."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    secs = sorted(r["seconds"] for r in runs)
    best["all_seconds"] = [r["seconds"] for r in runs]
    best["median_seconds"] = secs[len(secs) // 2]
    return best


def dedup_key():
    """``f(record, tools) -> (content hash, JSONL line)`` the way the installed
    gymray computes them (the helpers moved between versions)."""
    try:
        from gymray.records import content_hashes, encode

        from gymray.rollouts import hash64

        def key(record: dict, tools: list) -> tuple[int, bytes]:
            line, fields = encode(record)
            return hash64(content_hashes(fields)[1]), line

    except ImportError:
        import orjson
        from gymray.pipeline import record_hashes

        def key(record: dict, tools: list) -> tuple[int, bytes]:
            return record_hashes(record, tools, 0)[1], orjson.dumps(record) + b"\n"

    return key


def apply_data_context(items: list[str]) -> dict:
    """``--data-context KEY=VALUE`` on the driver's current DataContext (prepare
    plans its pipeline in this process, so the settings reach it)."""
    if not items:
        return {}
    import ray.data

    ctx = ray.data.DataContext.get_current()
    done = {}
    for item in items:
        key, _, raw = item.partition("=")
        if not hasattr(ctx, key):
            raise SystemExit(f"--data-context: DataContext has no field {key!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        setattr(ctx, key, value)
        done[key] = value
    return done


TARGET_PEAK_GIB = 4.0  # the issues' peak-memory target for gymray


def max_pss(runs: list[dict]) -> float | None:
    vals = [r["memory"].get("peak_pss_sum_gib") for r in runs]
    return None if None in vals or not vals else max(vals)


def below_target(gib: float | None) -> bool | None:
    return None if gib is None else gib < TARGET_PEAK_GIB


def judge(
    summary: dict,
    g: dict | None,
    b: dict | None,
    g_runs: list[dict],
    compare: bool,
    ratio_min: float,
    ratio_aim: float | None = None,
) -> None:
    """Fill ``summary`` with what the two sides are judged by: ``check`` (same
    counts, same record lines), the ratio, ``targets`` and gymray's memory timeline."""
    targets: dict = {"gymray_peak_memory_gib_max": TARGET_PEAK_GIB, "ratio_min": ratio_min}
    if ratio_aim is not None:
        targets["ratio_aim"] = ratio_aim
    if g:
        sg = summary["gymray"]
        targets["gymray_peak_memory_met"] = sg["peak_memory_gib"] < TARGET_PEAK_GIB
        targets["gymray_peak_pss_met"] = below_target(sg["peak_pss_sum_gib"])
        targets["gymray_peak_machine_used_met"] = below_target(
            g["memory"].get("peak_machine_used_growth_gib")
        )
        summary["gymray_memory_timeline"] = {
            "columns": ["seconds", "rss_sum_gib", "object_store_used_gib"],
            "points": g["memory_timeline"],
        }
    if g and b:
        ratio = b["seconds"] / g["seconds"]
        gc, bc = g["counts"], b["counts"]
        same_records = sum(gc["records"].values()) == bc["records"]
        check: dict = {
            "same_record_count": same_records,
            "same_counts": same_records
            and gc["input_lines"] == bc["input_lines"]
            and gc["used"] == bc["used"]
            and gc["filtered"] == bc["filtered"]
            and gc["rejected"] == bc["rejected"],
        }
        if compare:
            gp = g["paths"]
            gn, gd = line_multiset_digest(
                [Path(gp["train"])] + ([Path(gp["val"])] if gp.get("val") else [])
            )
            bn, bd = line_multiset_digest([Path(b["train"])])
            check.update(
                {"gymray_lines": gn, "baseline_lines": bn, "same_lines_multiset": gd == bd}
            )
        summary["check"] = check
        summary["ratio_baseline_over_gymray"] = round(ratio, 3)
        if len(g_runs) > 1:
            summary["ratio_of_medians"] = round(b["median_seconds"] / g["median_seconds"], 3)
        targets["ratio_met"] = ratio >= ratio_min
        if ratio_aim is not None:
            targets["ratio_aim_met"] = ratio >= ratio_aim
    summary["targets"] = targets


def with_gymray_load(run: dict) -> dict:
    """A gymray run with its `load` (own vs other processes' CPU) attached."""
    m = run["memory"]
    run["load"] = noise(m["cpu_seconds_own"], m["cpu_seconds_machine"], run["seconds"])
    return run


def run_baseline(script: Path, corpus: Path, out: Path, i: int, runs: int) -> dict:
    """One baseline run in a fresh interpreter (its peak memory is its own), with its load."""
    print(f"[{i + 1}/{runs}] baseline (single process) ...", file=sys.stderr, flush=True)
    b = run_child(script, [str(corpus), str(out)])
    b["load"] = noise(b["cpu_seconds"], b["cpu_seconds_machine"], b["process_wall_seconds"])
    return b
