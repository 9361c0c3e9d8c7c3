"""Publishing a dataset directory atomically, and reading what is published.

* local / NFS: written into a hidden temporary sibling
  (``.<name>.gymray-tmp-<host>-<pid>-<rand>``), then renamed into place;
* object stores: a ``_gymray_writing.json`` marker first, then the data objects,
  then ``manifest.json`` last. A prefix without a manifest is not a dataset:
  readers (and gymray's own reuse check) treat it as absent, and the next run
  deletes what a crashed run left there.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pyarrow.fs as pafs

from gymray.errors import StorageError
from gymray.storage.fs import filesystem, is_remote, join

log = logging.getLogger("gymray")

MANIFEST = "manifest.json"
# Written first on object stores, deleted after the manifest: a prefix holding it
# and no manifest is a write in progress or a crashed one, never a dataset.
WRITING_MARKER = "_gymray_writing.json"
# A temporary dir of another host cannot be checked for a live owner: it is
# taken as abandoned once nothing in it changed for this long.
STALE_SECONDS = 24 * 3600
TMP_TAG = ".gymray-tmp-"
OLD_TAG = ".gymray-old-"


# --------------------------------------------------------------------------- reading outputs
def read_bytes(uri: str, storage: Any = None) -> bytes | None:
    """The bytes of a file, or None when it does not exist. Any other failure
    (permissions, credentials, network) raises: it must not read as "absent",
    or a run would write over a dataset it could not see."""
    fs, path = filesystem(uri, storage)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        try:
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                return None
        except OSError:
            pass
        raise StorageError(f"cannot read {uri}: {e}") from None


def read_manifest(output: str, storage: Any = None) -> dict | None:
    """The committed manifest of a dataset, or None when there is no dataset.

    A manifest that is not valid JSON reads as ``{}``: a dataset of unknown
    fingerprint, never reused, replaced only with ``overwrite=true``."""
    raw = read_bytes(join(output, MANIFEST), storage)
    if raw is None:
        return None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return manifest if isinstance(manifest, dict) else {}


OutputState = Literal["absent", "dataset", "unfinished", "other"]
NAMES_SHOWN = 3  # entries named when refusing a directory that is not a dataset


def is_dataset_manifest(manifest: dict | None) -> bool:
    """A manifest gymray wrote: a JSON object with a fingerprint. Many tools write a
    ``manifest.json``; only one with a fingerprint makes a directory a gymray dataset."""
    return (
        isinstance(manifest, dict)
        and isinstance(manifest.get("fingerprint"), str)
        and bool(manifest["fingerprint"])
    )


def inspect_output(output: str, storage: Any = None) -> tuple[OutputState, dict | None]:
    """What is at ``output`` now, and its manifest if it has one (see :func:`output_state`)."""
    fs, path = filesystem(output, storage)
    manifest = read_manifest(output, storage)
    if is_dataset_manifest(manifest):
        return "dataset", manifest
    if manifest is not None:
        return "other", manifest  # someone else's manifest.json, or an unreadable one
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return "absent", None
        if info.type != pafs.FileType.Directory:
            return "other", None
        names = {
            i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        }
    except OSError as e:
        raise StorageError(f"cannot list output {output}: {e}") from None
    if not names:
        return "absent", None
    # Local writes happen in a hidden sibling: a marker means something only in a prefix.
    return "unfinished" if is_remote(output) and WRITING_MARKER in names else "other", None


def output_state(output: str, storage: Any = None) -> OutputState:
    """What is at ``output`` now: a committed gymray dataset (a manifest with a
    fingerprint), nothing (or an empty directory), the leftovers of an unfinished
    gymray write (object stores; replaced without asking), or something else, which
    gymray never replaces, not even with ``overwrite=true``."""
    return inspect_output(output, storage)[0]


def refuse_unless_replaceable(
    output: str, storage: Any = None, overwrite: bool = False
) -> tuple[OutputState, dict | None]:
    """The state of ``output`` (and its manifest) when gymray may write there; a
    :class:`StorageError` naming what is there when it is not gymray's to replace.
    ``overwrite`` does not change this: it replaces gymray datasets only."""
    state, manifest = inspect_output(output, storage)
    if state != "other":
        return state, manifest
    fix = (
        "gymray never replaces it, not even with overwrite=true: choose another output "
        "(a new or empty directory)"
    )
    if manifest is not None:
        raise StorageError(
            f"{output} holds a {MANIFEST} gymray cannot read (not a gymray dataset: no "
            f"fingerprint); {fix}"
        )
    fs, path = filesystem(output, storage)
    try:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.Directory:
            raise StorageError(f"{output} is a file, not a gymray dataset; {fix}")
        names = sorted(
            i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        )
    except OSError as e:
        raise StorageError(f"cannot list output {output}: {e}") from None
    shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
    raise StorageError(
        f"{output} is not a gymray dataset (no {MANIFEST}; it holds {len(names)} "
        f"entr{'y' if len(names) == 1 else 'ies'}: {shown}); {fix}"
    )


def _place(uri: str) -> tuple[str, str]:
    """Where a path or URI points, comparable by prefix: real paths for local files
    (symlinks resolved), ``(scheme, bucket/key)`` for object stores."""
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        scheme = {"s3a": "s3", "gcs": "gs"}.get(scheme.lower(), scheme.lower())
        return scheme, posixpath.normpath("/" + rest).strip("/")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return "", os.path.realpath(os.path.expanduser(path))


def _within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    if inner[0] != outer[0]:
        return False
    sep = "/" if inner[0] else os.sep
    return inner[1].startswith(outer[1].rstrip(sep) + sep)


def refuse_overlap(output: str, inputs: list[str], tasks: list[str]) -> None:
    """Refuse an output that is, contains, or lies inside an input or tasks file:
    writing a dataset there (or overwriting it) could delete what it is made from."""
    out = _place(output)
    for kind, uris in (("input", inputs), ("tasks file", tasks)):
        for uri in uris:
            place = _place(uri)
            if place == out:
                how = "is"
            elif _within(place, out):
                how = "contains"
            elif _within(out, place):
                how = "is inside"
            else:
                continue
            raise StorageError(
                f"output {output} {how} the {kind} {uri}: a dataset written there could "
                "delete what it is made from; choose an output apart from the inputs"
            )


# --------------------------------------------------------------------------- writing outputs
def _host() -> str:
    return socket.gethostname()


class Staging:
    """Where a dataset is written before it is published.

    ``open(relpath)`` gives a writable stream (plain writes or a
    ``pyarrow.parquet.ParquetWriter``); ``commit(manifest)`` publishes;
    ``abort()`` removes what was written.
    """

    def __init__(self, output: str, storage: Any = None, overwrite: bool = False):
        self.output = output
        self.storage = storage
        self.remote = is_remote(output)
        self._streams: list = []
        self.fs, self.final_path = filesystem(output, storage)
        if self.remote:
            if "/" not in self.final_path.strip("/"):
                raise StorageError(
                    f"output {output} is a whole bucket: give a prefix inside it, "
                    "e.g. s3://bucket/datasets/sft-v1"
                )
            self.path = self.final_path
            self._begin_remote(overwrite)
        else:
            parent, name = os.path.split(self.final_path)
            if not name:
                raise StorageError(f"output {output} is not a directory name gymray can create")
            refuse_unless_replaceable(output, storage, overwrite)
            os.makedirs(parent, exist_ok=True)
            _clean_stale_local(parent, name)
            self.path = os.path.join(
                parent, f".{name}{TMP_TAG}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            )
            os.makedirs(self.path)

    def _begin_remote(self, overwrite: bool) -> None:
        fs, prefix = self.fs, self.path
        marker = posixpath.join(prefix, WRITING_MARKER)
        raw = read_bytes(join(self.output, WRITING_MARKER), self.storage)
        if raw is not None:
            owner = _loads_or_empty(raw)
            if owner.get("host") == _host() and owner.get("pid") not in (None, os.getpid()):
                if _pid_alive(int(owner["pid"])):
                    raise StorageError(
                        f"another gymray run (pid {owner['pid']} on this host) is writing "
                        f"{self.output} now: wait for it to finish or stop it"
                    )
            # Another host's writer cannot be checked from here: object stores have no
            # locks, so the newest writer wins and the older one's manifest never lands.
            log.info(
                "%s holds an unfinished write (host %s, pid %s, started %s): replacing it",
                self.output,
                owner.get("host"),
                owner.get("pid"),
                owner.get("started"),
            )
        else:
            refuse_unless_replaceable(self.output, self.storage, overwrite)
        manifest = posixpath.join(prefix, MANIFEST)
        try:
            published = fs.get_file_info(manifest).type == pafs.FileType.File
            if published and not overwrite:
                raise StorageError(
                    f"{self.output} holds a dataset; set overwrite=true to replace it"
                )
            # The marker goes first: whatever a crash leaves from here on is
            # recognisably an unfinished gymray write, cleaned up by the next run.
            with fs.open_output_stream(marker) as f:
                f.write(
                    orjson.dumps(
                        {
                            "host": _host(),
                            "pid": os.getpid(),
                            "started": datetime.now(UTC).isoformat(timespec="seconds"),
                            "what": "gymray is writing a dataset here; it is not a dataset "
                            f"until {MANIFEST} exists",
                        }
                    )
                )
            if published:
                # Un-publish first: from here on readers see "no dataset", never the
                # old manifest over a mix of old and new objects.
                fs.delete_file(manifest)
            self._clear(keep_marker=True)
        except OSError as e:
            raise StorageError(f"cannot write output {self.output}: {e}") from None

    def _clear(self, keep_marker: bool) -> None:
        """Delete everything under the prefix, the marker last (or not at all)."""
        for info in self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)):
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(info.path)
            elif info.base_name != WRITING_MARKER:
                self.fs.delete_file(info.path)
        if not keep_marker:
            self.fs.delete_file(posixpath.join(self.path, WRITING_MARKER))

    def local_path(self, relpath: str) -> str:
        return (
            posixpath.join(self.path, relpath) if self.remote else os.path.join(self.path, relpath)
        )

    def open(self, relpath: str):
        path = self.local_path(relpath)
        if not self.remote:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        stream = self.fs.open_output_stream(path, buffer_size=1 << 20)
        self._streams.append(stream)
        return stream

    def _close_streams(self) -> None:
        # An S3 output stream still open at interpreter exit hangs the process in
        # pyarrow's S3 finalizer (an exception's traceback keeps the writer's streams
        # alive until then), so every stream is closed here, on commit and on abort.
        for stream in self._streams:
            try:
                if not stream.closed:
                    stream.close()
            except (OSError, ValueError):
                pass
        self._streams.clear()

    def delete(self, relpath: str) -> None:
        self.fs.delete_file(self.local_path(relpath))

    def commit(self, manifest: dict) -> None:
        self._close_streams()
        with self.open(MANIFEST) as f:
            f.write(
                orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
        if self.remote:
            # Published by the manifest above; the marker only matters without one.
            try:
                self.fs.delete_file(posixpath.join(self.path, WRITING_MARKER))
            except OSError:
                pass
            return
        old = None
        if os.path.lexists(self.final_path):
            # Checked again here: the output may have changed since the run began, and
            # only a gymray dataset is ever moved aside (and deleted).
            refuse_unless_replaceable(self.output, self.storage, overwrite=True)
            parent, name = os.path.split(self.final_path)
            old = os.path.join(parent, f".{name}{OLD_TAG}{uuid.uuid4().hex[:8]}")
            os.rename(self.final_path, old)
        os.rename(self.path, self.final_path)
        if old:
            _remove(old)

    def abort(self) -> None:
        self._close_streams()
        try:
            if self.remote:
                self._clear(keep_marker=False)
            else:
                shutil.rmtree(self.path, ignore_errors=True)
        except OSError:
            pass  # the next run cleans up (marker / stale tmp dir)


def _loads_or_empty(raw: bytes) -> dict:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return d if isinstance(d, dict) else {}


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def _newest_mtime(path: str) -> float:
    """Newest mtime of a dir and the files in it: a dir's own mtime does not move
    while its files grow."""
    newest = os.path.getmtime(path)
    for root, _, files in os.walk(path):
        for f in files:
            try:
                newest = max(newest, os.path.getmtime(os.path.join(root, f)))
            except OSError:
                pass
    return newest


def _clean_stale_local(parent: str, name: str) -> None:
    """Remove what crashed runs left beside ``name``: temporary dirs whose writer
    is gone (same host: its pid is dead; another host: untouched for a day) and
    old copies a commit did not get to delete."""
    tmp_prefix, old_prefix = f".{name}{TMP_TAG}", f".{name}{OLD_TAG}"
    host = _host()
    for entry in os.listdir(parent):
        full = os.path.join(parent, entry)
        if entry.startswith(old_prefix):
            _remove(full)
            continue
        if not entry.startswith(tmp_prefix):
            continue
        try:
            owner_host, pid, _ = entry[len(tmp_prefix) :].rsplit("-", 2)
            if owner_host == host:
                stale = not _pid_alive(int(pid))
            else:
                stale = time.time() - _newest_mtime(full) > STALE_SECONDS
        except (ValueError, OSError):
            continue
        if stale:
            log.info("removing %s, left by an unfinished gymray run", full)
            _remove(full)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
