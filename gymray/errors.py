"""gymray's error types and exit codes: the one place they are defined.

Every failure a user can meet is one of these, with a message that says what was
wrong, where and what to do; the command line prints it as one ``gymray: error:``
line and exits with its code.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
from contextlib import contextmanager

EXIT_OK = 0
EXIT_FAILED = 1  # the training job FAILED
EXIT_USAGE = 2  # a setting, an input or an output the user must fix
EXIT_STOPPED = 3  # the job was STOPPED, or gymray was interrupted (SIGINT/SIGTERM)
EXIT_AUTH = 4  # missing or wrong Ray auth token
EXIT_UNREACHABLE = 5  # the Ray cluster or its job API does not answer
EXIT_TIMEOUT = 6  # gave up waiting (job.timeout_s); the job keeps running
EXIT_EMPTY = 7  # the dataset has no training records (allow_empty=true to accept)
EXIT_IO = 8  # the storage failed: disk full, permission denied, lost connection
EXIT_INTERNAL = 9  # a bug in gymray (or in what it runs on): the log has the traceback

EXIT_CODES = {
    EXIT_OK: "succeeded (a job SUCCEEDED, was submitted with --no-wait, or a dry run)",
    EXIT_FAILED: "the training job FAILED",
    EXIT_USAGE: "usage or settings error: the message names the setting or path to fix",
    EXIT_STOPPED: "the training job was STOPPED, or gymray was interrupted",
    EXIT_AUTH: "the Ray job API refused the auth token (or none was found)",
    EXIT_UNREACHABLE: "the Ray cluster or its job API cannot be reached",
    EXIT_TIMEOUT: "timed out waiting for the job (job.timeout_s); it keeps running",
    EXIT_EMPTY: "no training records were written (set allow_empty=true to accept that)",
    EXIT_IO: "reading or writing storage failed (disk full, permissions, network)",
    EXIT_INTERNAL: "unexpected internal error; the traceback is in the log file named",
}


class GymrayError(Exception):
    """An error with a one-line message for the user and an exit code."""

    exit_code = EXIT_USAGE


class ConfigError(GymrayError, ValueError):
    """A setting is wrong; the message says which and what to do."""


class StorageError(GymrayError, RuntimeError):
    """A path cannot be used (not found, not a dataset, refused); the message says which and why."""


class StorageIOError(StorageError):
    """Reading or writing storage failed underneath (disk full, permissions, network)."""

    exit_code = EXIT_IO


class UnreadableInput(StorageError):
    """An input file's bytes cannot be decoded past some point (a truncated or
    corrupt ``.gz``, random bytes named ``.gz``). The message says what and where.
    The engine makes it a reject of that file and goes on with the others."""


class InputChanged(StorageError):
    """An input's line is not what gymray read a moment ago (rewritten, truncated or
    appended to during prepare): the run stops, naming the file and line."""


class EmptyDatasetError(GymrayError):
    """A prepare wrote no training records, or a launch was asked for such a dataset."""

    exit_code = EXIT_EMPTY


class ClusterError(GymrayError):
    """The Ray cluster cannot be reached or used."""

    exit_code = EXIT_UNREACHABLE


class JobError(GymrayError, RuntimeError):
    """A job problem reported as one line and an exit code."""


class AuthError(JobError):
    exit_code = EXIT_AUTH


class UnreachableError(JobError):
    exit_code = EXIT_UNREACHABLE


class ResourceError(JobError):
    exit_code = EXIT_USAGE


class Interrupted(GymrayError):
    """SIGINT or SIGTERM arrived; what was being done has been stopped and cleaned up."""

    exit_code = EXIT_STOPPED

    def __init__(self, signal_name: str):
        super().__init__(f"stopped by {signal_name}: nothing half-written was published")
        self.signal_name = signal_name


class Stop(BaseException):  # noqa: N818 - a signal, not an error
    """What gymray's signal handler raises: a BaseException, like KeyboardInterrupt, so
    that no library's ``except Exception`` swallows it (Ray Data's dataset-id fallback
    did, and the run went on to publish); the CLI turns it into :class:`Interrupted`."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


# Signals the CLI's handler raised :class:`Stop` for. Code that cannot propagate an
# exception (a Cython callback, a finalizer) prints and drops it, so the run checks
# here, with :func:`raise_if_stopped`, where stopping is safe (once, Ray's 'cls_name'
# callback dropped it and the prepare published).
STOPS: list[str] = []


def raise_if_stopped() -> None:
    if STOPS:
        raise Stop(STOPS[0])


@contextmanager
def signals_raise():
    """SIGTERM (what `ray job stop` and Slurm send) and SIGINT stop the run at once,
    cleaning up on the way out, with exit code 3."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        STOPS.append(signal.Signals(signum).name)  # in case the Stop below is dropped
        raise Stop(STOPS[-1])

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        raise_if_stopped()  # noted before (gymray.run, while the CLI imported): stop now
        yield
        raise_if_stopped()
    except Stop as e:
        raise Interrupted(e.signal_name) from None
    except BaseException:
        if STOPS:  # the Stop came back as another error: Ray's Cython ``wait`` makes it a
            raise Interrupted(STOPS[0]) from None  # SystemError ("returned a result ...")
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        STOPS.clear()


def finished() -> None:
    """The verb's outcome is final (its dataset published): a SIGTERM or Ctrl-C from now
    on, while it prints and lets Ray go (~1 s for a local Ray), changes nothing. Such a
    signal gave exit 3, "nothing half-written was published", or killed the process
    (-15), over a complete dataset. A stop asked for before, and dropped, still stops the
    run."""
    raise_if_stopped()
    note_late_signals()


def note_late_signals() -> None:
    """SIGTERM and Ctrl-C noted in ``LATE``, not raised, from now on (a second one ends
    the process at once): the process's outcome is decided (see :func:`finished`)."""
    note_signals(LATE)


def note_signals(into: list[str]) -> None:
    """SIGTERM and Ctrl-C noted in ``into`` (by name), not raised, from now on; a second
    one ends the process at once. ``STOPS``: a stop for the verb to come (see
    :func:`signals_raise`); ``LATE``: one past the outcome."""
    if threading.current_thread() is not threading.main_thread():
        return

    def note(signum, frame):
        if into:  # asked twice: end now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        into.append(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, note)


LATE: list[str] = []  # signals noted once the outcome was decided (see finished)


class Failure:
    """What a failure means for the user: one line, an exit code, whether it was an
    expected kind (a setting, a path, the cluster) or a bug (then the log matters)."""

    def __init__(self, message: str, exit_code: int, kind: str, expected: bool):
        self.message, self.exit_code, self.kind, self.expected = message, exit_code, kind, expected


# Ray's own failures, by class name (errors.py imports no Ray: recipes use it).
RAY_LOST = {"ActorDiedError", "NodeDiedError", "WorkerCrashedError", "ObjectLostError",
            "OwnerDiedError", "ActorUnavailableError", "RaySystemError"}  # fmt: skip
# Storage failing underneath a write: the one table of them and the one wording, for
# storage/failures.writing and for classify (an error no writing() wrapped).
NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
DENIED = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
IO_ERRNOS = {**NO_SPACE, **DENIED, errno.EIO: "input/output error"}
# pyarrow keeps the errno in the text of some errors only: "... Detail: [errno 28] ..."
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
FIX = "choose another output"


def error_number(e: OSError) -> int | None:
    if e.errno:
        return e.errno
    found = _ERRNO_TEXT.search(str(e))
    return int(found.group(1)) if found else None


def write_error(
    e: OSError, output: str | None, file: str | None = None, fix: str = FIX
) -> StorageIOError:
    """The one-line error for ``e``, raised while writing ``file`` of ``output``
    (``output`` None: where is not known, as when :func:`classify` meets ``e``)."""
    where = f" {output} ({file})" if output and file else f" {output}" if output else ""
    at = f" writing{where}" if where else ""
    code = error_number(e)
    if code in NO_SPACE:
        return StorageIOError(f"{NO_SPACE[code]}{at}: free space or {fix}")
    if code in DENIED:
        return StorageIOError(
            f"{DENIED[code]}{at}: make it writable for gymray and its Ray workers, or {fix}"
        )
    detail = " ".join(str(e).split())  # pyarrow's messages span lines
    if code in IO_ERRNOS:
        return StorageIOError(f"{IO_ERRNOS[code]}{at}: {detail}")
    return StorageIOError(f"writing{where} failed: {detail}")


def causes(e: BaseException):
    """``e`` and what it wraps: Ray task errors keep the worker's exception in ``cause``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__


def _ray_task_error(e: BaseException) -> bool:
    return any(c.__name__ == "RayTaskError" for c in type(e).__mro__)


def classify(e: BaseException) -> Failure:
    """The user-facing meaning of any exception, whoever raised it (gymray, Ray, pyarrow, OS)."""
    chain = list(causes(e))
    for x in chain:
        # (a worker's error as Ray re-raises it is also a RayTaskError, whose text is
        # Ray's traceback: the worker's own exception, its cause, comes next)
        if isinstance(x, GymrayError) and not _ray_task_error(x):
            return Failure(str(x), x.exit_code, type(x).__name__, True)
    for x in chain:
        if isinstance(x, KeyboardInterrupt):
            return Failure("interrupted (SIGINT): stopped", EXIT_STOPPED, "Interrupted", True)
    for x in chain:
        if isinstance(x, OSError) and error_number(x) in IO_ERRNOS:
            return Failure(str(write_error(x, x.filename)), EXIT_IO, "StorageIOError", True)
    for x in chain:
        name = type(x).__name__
        if name in RAY_LOST:
            first = str(x).strip().splitlines()[0] if str(x).strip() else name
            return Failure(
                f"a Ray worker or node was lost and the run could not recover ({name}: "
                f"{first[:200]}); rerun: the output is unchanged and nothing partial was published",
                EXIT_INTERNAL,
                name,
                False,
            )
        if (
            name in ("ConnectionError", "GetTimeoutError", "RpcError")
            and "ray" in type(x).__module__
        ):
            return Failure(f"the Ray cluster stopped answering: {x}", EXIT_UNREACHABLE, name, True)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return Failure(
        f"unexpected {type(e).__name__}: {first[:300]}", EXIT_INTERNAL, type(e).__name__, False
    )
