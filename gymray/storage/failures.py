"""Storage failing underneath a write (disk full, no permission, a lost connection):
one line that names the output, the file being written and what to do.

Writes happen in Ray workers (parts), Ray tasks (assembly) and on the driver
(report, manifest); each wraps its writes in :func:`writing`, so whichever of
them fails, the error that reaches the user is a
:class:`~gymray.errors.StorageIOError` (exit code 8) naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from gymray.errors import DENIED, NO_SPACE, StorageIOError

# pyarrow keeps the errno in the text of some errors only: "... Detail: [errno 28] ..."
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
FIX = "choose another output"


def error_number(e: OSError) -> int | None:
    if e.errno:
        return e.errno
    found = _ERRNO_TEXT.search(str(e))
    return int(found.group(1)) if found else None


def write_error(e: OSError, output: str, file: str | None = None, fix: str = FIX) -> StorageIOError:
    """The one-line error for ``e``, raised while writing ``file`` of ``output``."""
    where = f"{output} ({file})" if file else output
    code = error_number(e)
    if code in NO_SPACE:
        return StorageIOError(f"{NO_SPACE[code]} writing {where}: free space or {fix}")
    if code in DENIED:
        return StorageIOError(
            f"{DENIED[code]} writing {where}: make it writable for gymray and its Ray "
            f"workers, or {fix}"
        )
    detail = " ".join(str(e).split())  # pyarrow's messages span lines
    return StorageIOError(f"writing {where} failed: {detail}")


@contextmanager
def writing(output: str, file: str | None = None, fix: str = FIX) -> Iterator[None]:
    """Turn an OSError raised inside into a :class:`StorageIOError` naming ``file``."""
    try:
        yield
    except OSError as e:
        raise write_error(e, output, file, fix) from e
