"""Storage failing underneath a write (disk full, no permission, a lost connection):
one line that names the output, the file being written and what to do.

Writes happen in Ray workers (parts), Ray tasks (assembly) and on the driver
(report, manifest); each wraps its writes in :func:`writing`, so whichever of
them fails, the error that reaches the user is a
:class:`~gymray.errors.StorageIOError` (exit code 8) naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gymray.errors import FIX, write_error


@contextmanager
def writing(output: str, file: str | None = None, fix: str = FIX) -> Iterator[None]:
    """Turn an OSError raised inside into a :class:`StorageIOError` naming ``file``."""
    try:
        yield
    except OSError as e:
        raise write_error(e, output, file, fix) from e
