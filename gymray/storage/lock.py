"""Who is writing an object-store prefix: a marker object holding its writer's token.

Object stores have no rename, and pyarrow's S3 client sends no conditional put
(``If-None-Match: *``), so two runs cannot publish into one prefix by
compare-and-swap. A writer holds a prefix by its marker (``_gymray_writing.json``):

1. a marker of a live writer (this host: its process runs; another host: its
   heartbeat is fresh) means the prefix is busy, and the run is refused;
2. otherwise the writer puts its own marker (a random token), waits
   ``SETTLE_SECONDS`` and reads it back: a rival that put its marker meanwhile
   wins, and this writer backs off;
3. while it writes, a thread rewrites the marker every ``HEARTBEAT_SECONDS``
   (and stops once it finds another token there);
4. before it assembles its files and before it writes the manifest, the writer
   reads the marker again: another token means it lost the prefix, and it
   publishes nothing and deletes nothing.

The window left: a rival whose check (1) came before this writer's put and whose
own put lands after this writer's read-back (a stall of more than
``SETTLE_SECONDS`` between two of its requests) also proceeds. Step 4 stops
this writer (its marker was replaced), but objects it wrote until then may
remain among the rival's. Hosts' clocks are compared for the heartbeat: keep them
in sync (NTP); a marker is taken as abandoned ``STALE_MARKER_SECONDS`` after its
last heartbeat.
"""

from __future__ import annotations

import os
import posixpath
import socket
import threading
import time
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow.fs as pafs

from gymray.errors import StorageError, StorageIOError

# Written first on object stores, deleted after the manifest: a prefix holding it
# and no manifest is a write in progress or a crashed one, never a dataset.
WRITING_MARKER = "_gymray_writing.json"
SETTLE_SECONDS = 1.0
HEARTBEAT_SECONDS = 30.0
STALE_MARKER_SECONDS = 300.0  # ten missed heartbeats: the writer is gone

# The locks this process holds, by token: a marker naming this very process is
# live only while its lock is (a dropped or finished Staging's marker is not).
_LIVE: weakref.WeakValueDictionary[str, PrefixLock] = weakref.WeakValueDictionary()


def host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def loads_or_empty(raw: bytes) -> dict:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return d if isinstance(d, dict) else {}


def who(owner: dict | None) -> str:
    if not owner:
        return "unknown"
    return f"host {owner.get('host')}, pid {owner.get('pid')}, started {owner.get('started')}"


class PrefixLock:
    """The marker of one writer of ``prefix`` (in ``fs``); ``label`` names the
    output in messages."""

    def __init__(self, fs: pafs.FileSystem, prefix: str, label: str):
        self.fs, self.label = fs, label
        self.path = posixpath.join(prefix, WRITING_MARKER)
        self.token = uuid.uuid4().hex
        self.held = False
        self.body = {
            "host": host(),
            "pid": os.getpid(),
            "token": self.token,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "what": "gymray is writing a dataset here; it is not a dataset until "
            "manifest.json exists",
        }
        self._stop = threading.Event()
        self._beat = threading.Lock()
        self._thread: threading.Thread | None = None
        # A lock dropped without release (its Staging lost) stops its heartbeat.
        weakref.finalize(self, self._stop.set)

    # ------------------------------------------------------------------ reading
    def owner(self) -> dict | None:
        """The marker now in the prefix, or None."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                return loads_or_empty(f.read())
        except FileNotFoundError:
            return None
        except OSError as e:
            try:
                if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                    return None
            except OSError:
                pass
            raise StorageIOError(f"cannot read {self.label}/{WRITING_MARKER}: {e}") from None

    def busy(self) -> dict | None:
        """The marker of another writer still at work here, or None (no marker,
        or one its writer left behind)."""
        owner = self.owner()
        if owner is None or owner.get("token") == self.token:
            return None
        return owner if self._alive(owner) else None

    def _alive(self, owner: dict) -> bool:
        pid = owner.get("pid")
        if owner.get("host") == host() and isinstance(pid, int):
            if pid == os.getpid():
                return owner.get("token") in _LIVE
            return pid_alive(pid)
        return time.time() - self._last_beat(owner) < STALE_MARKER_SECONDS

    def _last_beat(self, owner: dict) -> float:
        beat = owner.get("heartbeat")
        if isinstance(beat, int | float):
            return float(beat)
        try:  # a marker without heartbeats: its age is its object's
            mtime = self.fs.get_file_info(self.path).mtime
        except OSError:
            return 0.0
        return mtime.timestamp() if mtime else 0.0

    def busy_message(self, owner: dict) -> str:
        msg = (
            f"another gymray run ({who(owner)}) is writing {self.label} now: wait for it to finish"
        )
        if owner.get("host") == host():
            return f"{msg}, or stop it"
        expires = datetime.fromtimestamp(self._last_beat(owner) + STALE_MARKER_SECONDS, UTC)
        return (
            f"{msg}; if it crashed, its {WRITING_MARKER} is taken over from "
            f"{expires.isoformat(timespec='seconds')} (no heartbeat for "
            f"{STALE_MARKER_SECONDS:.0f} s)"
        )

    # ------------------------------------------------------------------ writing
    def _put(self) -> None:
        _write_marker(self.fs, self.path, self.body)

    def acquire(self) -> None:
        """Put this writer's marker and make sure it stayed (see the module doc)."""
        _LIVE[self.token] = self
        try:
            self._put()
            time.sleep(SETTLE_SECONDS)
            owner = self.owner()
        except OSError as e:
            _LIVE.pop(self.token, None)
            raise StorageIOError(f"cannot write {self.label}/{WRITING_MARKER}: {e}") from None
        if not owner or owner.get("token") != self.token:
            _LIVE.pop(self.token, None)
            raise StorageError(
                f"another gymray run ({who(owner)}) started writing {self.label} at the same "
                "moment: this one backs off; rerun once that run is done (its dataset is then "
                "reused or refused)"
            )
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(
            target=_heartbeat,
            args=(self.fs, self.path, self.token, self.body, self._stop, self._beat),
            name=f"gymray-heartbeat-{self.token[:8]}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat: after this, nothing rewrites the marker."""
        with self._beat:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def check(self) -> None:
        """Raise unless this writer still holds the prefix."""
        owner = self.owner()
        if owner is not None and owner.get("token") == self.token:
            return
        self.held = False
        if owner is None:
            raise StorageError(
                f"{self.label}/{WRITING_MARKER} was removed while this run was writing "
                "(by hand, or by another gymray run): this run published nothing; rerun"
            )
        raise StorageError(
            f"another gymray run ({who(owner)}) took over {self.label} while this one was "
            "writing: this run published nothing; rerun once that run is done"
        )

    def owned(self) -> bool:
        try:
            owner = self.owner()
        except StorageError:
            return False
        return owner is not None and owner.get("token") == self.token

    def release(self) -> None:
        """Stop the heartbeat and delete the marker if it is still this writer's."""
        self.stop()
        if self.held and self.owned():
            try:
                self.fs.delete_file(self.path)
            except OSError:
                pass  # a leftover marker of a dead writer is taken over later
        self.held = False
        _LIVE.pop(self.token, None)


def _write_marker(fs: Any, path: str, body: dict) -> None:
    with fs.open_output_stream(path) as f:
        f.write(orjson.dumps({**body, "heartbeat": time.time()}))


def _heartbeat(
    fs: Any, path: str, token: str, body: dict, stop: threading.Event, beat: threading.Lock
) -> None:
    # No reference to the lock itself: a lock nobody holds must be collectable.
    while not stop.wait(HEARTBEAT_SECONDS):
        with beat:
            if stop.is_set():
                return
            try:
                with fs.open_input_stream(path) as f:
                    if loads_or_empty(f.read()).get("token") != token:
                        return  # lost: the next check says so
                _write_marker(fs, path, body)
            except OSError:
                continue  # a blip: the next beat tries again, long before the marker is stale
