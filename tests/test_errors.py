"""gymray.errors: every failure becomes one line, an exit code, and whether it is a bug."""

from __future__ import annotations

import errno

import pytest

from gymray import errors
from gymray.errors import classify, write_error


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.ConfigError("x"), errors.EXIT_USAGE),
        (errors.StorageError("x"), errors.EXIT_USAGE),
        (errors.StorageIOError("x"), errors.EXIT_IO),
        (errors.EmptyDatasetError("x"), errors.EXIT_EMPTY),
        (errors.ClusterError("x"), errors.EXIT_UNREACHABLE),
        (errors.AuthError("x"), errors.EXIT_AUTH),
        (errors.UnreachableError("x"), errors.EXIT_UNREACHABLE),
        (errors.ResourceError("x"), errors.EXIT_USAGE),
        (errors.Interrupted("SIGTERM"), errors.EXIT_STOPPED),
    ],
)
def test_gymray_errors_keep_their_message_and_code(exc, code):
    f = classify(exc)
    assert (f.exit_code, f.kind, f.expected) == (code, type(exc).__name__, True)
    assert f.message == str(exc)


def test_every_exit_code_is_described_and_distinct():
    codes = [v for k, v in vars(errors).items() if k.startswith("EXIT_") and k != "EXIT_CODES"]
    assert len(codes) == len(set(codes)) == len(errors.EXIT_CODES)
    assert set(codes) == set(errors.EXIT_CODES)


def test_a_gymray_error_wrapped_by_another_is_found_through_the_chain():
    class TaskError(Exception):  # Ray keeps the worker's exception in ``cause``
        def __init__(self, cause):
            super().__init__("task failed")
            self.cause = cause

    f = classify(TaskError(errors.ConfigError("bad setting")))
    assert (f.message, f.exit_code) == ("bad setting", errors.EXIT_USAGE)
    try:
        try:
            raise errors.EmptyDatasetError("nothing")
        except errors.EmptyDatasetError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as e:
        assert classify(e).exit_code == errors.EXIT_EMPTY


@pytest.mark.parametrize(
    "num", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO]
)
def test_storage_os_errors_are_io_failures_naming_the_file(num):
    f = classify(OSError(num, "x", "out/train.jsonl"))
    assert f.exit_code == errors.EXIT_IO and f.expected
    assert errors.IO_ERRNOS[num] in f.message and "writing out/train.jsonl" in f.message


def test_a_pyarrow_storage_error_is_an_io_failure_worded_as_a_wrapped_one():
    # pyarrow keeps the errno in its text only; reaching classify unwrapped, it is
    # still a storage failure (exit 8), in the words writing() would have used
    e = OSError("Error writing bytes to file.\nDetail: [errno 28] No space left on device")
    f = classify(e)
    assert (f.exit_code, f.kind, f.expected) == (errors.EXIT_IO, "StorageIOError", True)
    assert f.message == "no space left on device: free space or choose another output"
    denied = classify(OSError(errno.EACCES, "Permission denied", "out/train.jsonl"))
    assert str(write_error(OSError(errno.EACCES, "x"), "out/train.jsonl")) in denied.message
    assert "make it writable" in denied.message and "\n" not in f.message


def test_interrupts_and_lost_ray_workers_and_bugs():
    assert classify(KeyboardInterrupt()).exit_code == errors.EXIT_STOPPED
    lost = type("ActorDiedError", (Exception,), {})("the actor died\nmore detail")
    f = classify(lost)
    assert f.exit_code == errors.EXIT_INTERNAL and not f.expected
    assert "ActorDiedError: the actor died" in f.message and "more detail" not in f.message
    f = classify(ZeroDivisionError("division by zero"))
    assert (f.exit_code, f.expected) == (errors.EXIT_INTERNAL, False)
    assert f.message == "unexpected ZeroDivisionError: division by zero"
    # an OSError without a storage errno is not an IO failure
    assert classify(OSError(errno.ENOENT, "gone")).exit_code == errors.EXIT_INTERNAL


def test_a_ray_connection_error_means_unreachable_but_a_plain_one_does_not():
    RayConn = type("ConnectionError", (Exception,), {"__module__": "ray.exceptions"})
    assert classify(RayConn("gcs down")).exit_code == errors.EXIT_UNREACHABLE
    assert classify(ConnectionError("reset")).exit_code == errors.EXIT_INTERNAL


def test_a_cycle_of_causes_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert list(errors.causes(a)) == [a, b]
