"""Where a CLI run's lines go: ``gymray: ...`` on stderr, and a log file of the run
(with any traceback) that only a run that does not succeed keeps."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from gymray.errors import EXIT_OK

log = logging.getLogger("gymray")


def log_path() -> Path:
    """Where this run's log (and any traceback) goes: GYMRAY_LOG_DIR, else the temp dir."""
    base = Path(os.environ.get("GYMRAY_LOG_DIR") or Path(tempfile.gettempdir()) / "gymray-logs")
    return base / f"gymray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def file_log() -> logging.FileHandler | None:
    """Send the gymray logger and tracebacks to a log file of this run."""
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def close_log(handler: logging.FileHandler | None, code: int | None) -> None:
    """Only a run that did not succeed keeps its log: a successful one said all of it on
    stderr, and a log a run in the temp dir piled up (640 there after a day's work)."""
    if handler is None:
        return
    log.removeHandler(handler)
    handler.close()
    if code == EXIT_OK:
        Path(handler.baseFilename).unlink(missing_ok=True)


def run_log() -> str | None:
    """This run's log file, if it has one."""
    files = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
    return files[-1].baseFilename if files else None


class _Lines(logging.Formatter):
    """``gymray: message`` (``gymray: warning: message`` for warnings), as the CLI says it."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"gymray: {level}{record.getMessage()}"


def stderr_log() -> None:
    if not any(getattr(h, "_gymray", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Lines())
        handler._gymray = True
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
