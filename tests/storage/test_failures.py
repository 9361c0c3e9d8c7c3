"""Storage failing underneath a write: one line naming the output, the file and the fix."""

from __future__ import annotations

import errno
import os

import pyarrow.fs as pafs
import pytest

from gymray.errors import EXIT_IO, StorageIOError, error_number, write_error
from gymray.storage.failures import writing


@pytest.mark.parametrize(
    ("code", "start", "fix"),
    [
        (errno.ENOSPC, "no space left on device writing /o (a.jsonl)", "free space or choose"),
        (errno.EDQUOT, "disk quota exceeded writing /o (a.jsonl)", "free space or choose"),
        (errno.EACCES, "permission denied writing /o (a.jsonl)", "make it writable"),
        (errno.EROFS, "read-only file system writing /o (a.jsonl)", "make it writable"),
    ],
)
def test_known_causes_say_what_where_and_what_to_do(code, start, fix):
    e = write_error(OSError(code, os.strerror(code)), "/o", "a.jsonl")
    assert isinstance(e, StorageIOError) and e.exit_code == EXIT_IO
    assert str(e).startswith(start) and fix in str(e)
    assert "\n" not in str(e)


def test_pyarrow_errors_keep_the_errno_in_their_text_only():
    e = OSError("Error writing bytes to file.\nDetail: [errno 28] No space left on device")
    assert e.errno is None and error_number(e) == errno.ENOSPC
    assert str(write_error(e, "/o", "p.parquet")).startswith("no space left on device writing")


def test_other_failures_keep_their_message_on_one_line():
    e = write_error(OSError("connection reset\n  by peer"), "s3://b/ds")
    assert str(e) == "writing s3://b/ds failed: connection reset by peer"


def test_writing_turns_an_oserror_into_a_storage_error_and_keeps_the_cause(tmp_path):
    (tmp_path / "file").write_text("a file where a directory should be")
    with pytest.raises(StorageIOError, match=r"^writing /o \(file/x\) failed: ") as e:
        with writing("/o", "file/x"):
            pafs.LocalFileSystem().open_output_stream(str(tmp_path / "file" / "x"))
    assert isinstance(e.value.__cause__, OSError)


def test_writing_lets_other_errors_through():
    with pytest.raises(ValueError):
        with writing("/o", "x"):
            raise ValueError("not storage")
