"""Joining a Ray cluster: the one this process is connected to, the one at
``ray.address`` / ``RAY_ADDRESS``, or a small local one; failing fast, in one line,
when it does not answer. Kept apart from the job client (and light to import), since
Ray workers import the engine that uses it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from gymray.errors import AuthError, ClusterError, ConfigError

log = logging.getLogger("gymray")

# Whether this process joined a running cluster (rather than starting a Ray of its own)
_joined = False
# The ids of the driver's IO threads (Ray 2.56 names them worker.io), as it joined: other
# threads may bear the name, and end first (see disconnect)
_io_threads: frozenset[str] = frozenset()


def auth_token() -> str | None:
    """The Ray auth token, from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Sent explicitly because Ray 2.56's client only sends one when RAY_AUTH_MODE=token is
    set in the client's environment, and a 401 is a poor way to learn that.
    """
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError as e:
            raise AuthError(
                f"RAY_AUTH_TOKEN_PATH={path} cannot be read ({e.strerror}): point it at "
                "the cluster's token file or set RAY_AUTH_TOKEN"
            ) from None
    default = Path.home() / ".ray" / "auth_token"
    try:
        return default.read_text().strip() or None
    except OSError:
        return None


def ensure_ray(ray_settings: Any = None) -> None:
    """Use the Ray this process is connected to; else the one at ``ray.address`` /
    ``RAY_ADDRESS`` (``auto``: the cluster ``ray start`` runs on this machine); else
    start a small local one. A cluster that does not answer fails within
    ``ray.connect_timeout_s``, with one line naming its address."""
    global _joined, _io_threads
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rs = ray_settings
    address = (rs.address if rs else None) or os.environ.get("RAY_ADDRESS")
    timeout = rs.connect_timeout_s if rs else 60.0
    if address and address.startswith(("http://", "https://")):
        raise ConfigError(
            f"{address} is a Ray job API (dashboard) address; preparing needs the cluster "
            "itself: run gymray on the cluster (ray job submit --address "
            f"{address} -- python -m gymray.run ...), or set ray.address / RAY_ADDRESS to "
            "its GCS address (head:6379)"
        )
    if address == "auto":
        address = _running_here() or address
    if not address or address == "local":
        # A Ray of our own, not whatever cluster happens to run on this host.
        kwargs: dict[str, Any] = {"address": "local", "include_dashboard": False,
                                  "log_to_driver": False}  # fmt: skip
        if rs and rs.num_cpus:
            kwargs["num_cpus"] = rs.num_cpus
        if rs and rs.object_store_memory:
            kwargs["object_store_memory"] = rs.object_store_memory
        with _keep_signals(starts_ray=True):
            ray.init(**kwargs)
        _joined = False
        return
    if address != "auto":
        _reachable(address, min(timeout, 10.0))
    if auth_token() and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"  # Ray's client sends the token only then
    log.info("using the Ray cluster at %s", address)
    with _keep_signals(starts_ray=False):
        _init_within(address, timeout)
    _joined = True
    threads = _thread_names()
    _io_threads = frozenset(threads["worker.io"]) if threads else frozenset()


def disconnect(wait: bool = False) -> bool:
    """``ray.shutdown()``. True when it still runs, in a thread, and nothing of it is left
    but Ray's client winding its own threads down: the caller exits at once (os._exit).
    ``wait``: all of it, always (the interpreter's own exit follows).

    From a cluster this process joined, the driver's part of ``ray.shutdown()`` takes
    ~0.02 s: tell the raylet it is leaving (an intended exit), send its tasks' last
    events, stop its threads. Then its gRPC client waits out a 250 ms poll before its
    last thread ends (Ray 2.56; 0.25-0.27 s of every CLI run on 2 cores). The threads
    Ray names show which part runs: once the task-events thread and the driver's IO
    thread (the one it had when it joined) are gone, the rest is the wait. Elsewhere (a
    Ray this process started, whose processes ``ray.shutdown()`` stops; threads named
    otherwise) it waits for all of it.
    """
    if not ray.is_initialized():
        return False
    before = _thread_names()
    io = _io_threads
    if wait or not (_joined and io and before and before["task_event_buff"]
                    and io <= before["worker.io"]):  # fmt: skip
        _shutdown()
        return False
    thread = threading.Thread(target=_shutdown, daemon=True, name="gymray-ray-shutdown")
    thread.start()
    try:
        while thread.is_alive():
            now = _thread_names()
            if now is not None and not now["task_event_buff"] and not io & now["worker.io"]:
                return True
            thread.join(0.002)
    except BaseException:  # a signal: Ray's teardown ends before the interpreter's exit
        thread.join()
        raise
    return False


def _shutdown() -> None:
    try:
        ray.shutdown()
    except Exception:  # the outcome is the exit code; Ray's exit hook tries again
        log.debug("ray.shutdown() failed", exc_info=True)


def _thread_names() -> defaultdict[str, set[str]] | None:
    """The ids of this process's threads by name; None where they cannot all be read
    (no ``/proc``, or a read failing otherwise than for a thread that just ended)."""
    names: defaultdict[str, set[str]] = defaultdict(set)
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names[f.read().strip()].add(tid)
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
        except OSError:
            return None
    return names


@contextmanager
def _keep_signals(starts_ray: bool) -> Iterator[None]:
    """The caller's SIGTERM and SIGINT handlers (the CLI's stop the run, clean up, and exit
    3), kept through ray.init() and after it, from two handlers of Ray's:
    - a local ray.init() installs one that exits at once (``sys.exit(15)``): a SIGTERM
      then ended the half-started Ray mid-way (the CLI said "unexpected SystemExit: 15",
      exit 9, and Ray's agents stayed a minute; inside its driver's connect, the process
      crashed as it exited, as it does for a Ctrl-C there). Such a SIGTERM or SIGINT now
      waits for the end of ray.init() (a few seconds; as long as it takes on a stalled
      machine) and goes to the caller's handler then (``frame`` None), with a Ray that
      stops cleanly (Ray's processes ignore SIGINT);
    - the driver's core worker installs a C++ failure handler, SIGTERM's among others,
      that printed a stack ("*** SIGTERM received at ...") before calling the caller's,
      armed a 3 s alarm that aborted the process (-6) if it had not ended by then, and,
      as the driver shut down, set SIGTERM back to the default action: a SIGTERM while
      a local Ray stopped (~1 s after a prepare's last line) killed a run whose dataset
      was published (-15). Ray reads whether to install it from ``ray_constants`` as
      the driver connects: gymray's drivers go without (Ray's other processes read
      their own environment, and keep theirs).
    """
    constants = ray._private.ray_constants
    failure_handler_off = constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        with _held_signals(starts_ray):
            yield
    finally:
        constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = failure_handler_off


@contextmanager
def _held_signals(starts_ray: bool) -> Iterator[None]:
    """SIGTERM and SIGINT held while a local ray.init() runs, and Ray's own SIGTERM
    handler not installed (see :func:`_keep_signals`); the caller's handlers back after
    any ray.init(), a held signal given to them then."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    utils = ray._private.utils
    # Ray's own call to install its handler, made a no-op while a local ray.init() runs
    install = getattr(utils, "set_sigterm_handler", None) if starts_ray else None
    held = install is not None and callable(saved[signal.SIGTERM])
    deferred: list[int] = []
    if held:
        utils.set_sigterm_handler = lambda handler: None
        for s in (s for s, handler in saved.items() if callable(handler)):
            signal.signal(s, lambda signum, frame: deferred.append(signum))
    try:
        yield
    finally:
        if held:
            utils.set_sigterm_handler = install
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)
        if deferred:  # (its Stop wins over a failure of ray.init(): a stop was asked for)
            saved[deferred[0]](deferred[0], None)


class _NotMainThread(logging.Filter):
    """Drops Ray's warning that a ray.init() outside the main thread sets no SIGTERM
    handler: gymray joins in a thread on purpose, and keeps its own handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _running_here() -> str | None:
    """The GCS address of the cluster ``ray start`` runs on this machine, if it answers
    (else None, and Ray's own ``auto`` search says what it finds)."""
    try:
        found = ray._private.services.get_ray_address_from_environment(None, None)
    except Exception:  # several clusters, or none recorded: start our own
        return None
    if not found:
        return None
    try:
        _reachable(found, 2.0)
    except ClusterError:
        return None
    return found


def _reachable(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({e}): check ray.address / "
            "RAY_ADDRESS and that the head node is up"
        ) from None


def _init_within(address: str, timeout: float) -> None:
    """``ray.init(address)``, given up after ``timeout`` s (Ray itself retries forever)."""
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(address=address, log_to_driver=False)
        except BaseException as e:  # reported in the caller's thread
            failure.append(e)

    ray_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _NotMainThread) for f in ray_log.filters):
        ray_log.addFilter(_NotMainThread())
    thread = threading.Thread(target=connect, daemon=True, name="gymray-ray-init")
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.2)  # short waits: a SIGTERM in the main thread is seen at once
    if thread.is_alive():
        raise ClusterError(
            f"the Ray cluster at {address} did not answer within {timeout:g} s "
            "(ray.connect_timeout_s): check that its head node is up"
        )
    if failure:
        e = failure[0]
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "auth" in text.lower() or "token" in text.lower():
            raise AuthError(
                f"the Ray cluster at {address} refused the connection ({text}): set "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token"
            ) from None
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {text}") from None
