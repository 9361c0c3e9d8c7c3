"""Publishing a dataset directory atomically, and reading what is published.

* local / NFS: written into a hidden temporary sibling
  (``.<name>.gymray-tmp-<host>-<pid>-<rand>``), then renamed into place. The
  rename is the compare-and-publish: it fails onto a non-empty directory, so a
  run never replaces a dataset another run published meanwhile unless told to
  overwrite (then the old one is moved aside first, and the last run wins);
* object stores: a ``_gymray_writing.json`` marker first (it holds the prefix
  for one writer: :mod:`gymray.storage.lock`), then the data objects, then
  ``manifest.json`` last. A prefix without a manifest is not a dataset: readers
  (and gymray's own reuse check) treat it as absent, and the next run deletes
  what a crashed run left there.

Only nothing, a gymray dataset (a manifest with a fingerprint) or gymray's own
unfinished write is ever replaced, whatever ``overwrite`` says.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil
import time
import uuid
from typing import Any, Literal

import orjson
import pyarrow.fs as pafs

from gymray.errors import StorageError, write_error
from gymray.storage.failures import writing
from gymray.storage.fs import filesystem, is_remote, join
from gymray.storage.lock import WRITING_MARKER, PrefixLock, host, pid_alive, who

log = logging.getLogger("gymray")

MANIFEST = "manifest.json"
# A temporary dir of another host cannot be checked for a live owner: it is
# taken as abandoned once nothing in it changed for this long.
STALE_SECONDS = 24 * 3600
TMP_TAG = ".gymray-tmp-"
OLD_TAG = ".gymray-old-"
PUBLISH_ATTEMPTS = 20  # local renames tried while concurrent overwrites keep publishing


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
INSPECT_ATTEMPTS = 10  # looks at an output that concurrent runs keep replacing


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
    return _look(output, storage)[:2]


def _look(output: str, storage: Any) -> tuple[OutputState, dict | None, list[str] | None]:
    """:func:`inspect_output`, and for an ``other`` directory without a manifest the
    names it holds (None for a file): what :func:`refuse_unless_replaceable` shows."""
    fs, path = filesystem(output, storage)
    for _ in range(INSPECT_ATTEMPTS):
        manifest = read_manifest(output, storage)
        if is_dataset_manifest(manifest):
            return "dataset", manifest, None
        if manifest is not None:
            return "other", manifest, None  # someone else's manifest.json, or an unreadable one
        try:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                return "absent", None, None
            if info.type != pafs.FileType.Directory:
                return "other", None, None
            names = {
                i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            }
        except FileNotFoundError:
            continue  # another run replaced it between the look and the listing: look again
        except OSError as e:
            raise StorageError(f"cannot list output {output}: {e}") from None
        if MANIFEST in names:
            continue  # another run published between the read and the listing: look again
        if not names:
            return "absent", None, None
        # Local writes happen in a hidden sibling: a marker means something only in a prefix.
        if is_remote(output) and WRITING_MARKER in names:
            return "unfinished", None, None
        return "other", None, sorted(names)
    raise StorageError(
        f"{output} kept changing while gymray looked at it (other runs publishing there?): "
        "rerun when they are done"
    )


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
    state, manifest, names = _look(output, storage)
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
    if names is None:
        raise StorageError(f"{output} is a file, not a gymray dataset; {fix}")
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
class Staging:
    """Where a dataset is written before it is published.

    ``open(relpath)`` gives a writable stream (plain writes or a
    ``pyarrow.parquet.ParquetWriter``); ``commit(manifest)`` publishes;
    ``abort()`` removes what was written.

    Two runs into one output never silently replace each other: without
    ``overwrite`` the second publishes only where nothing is (a dataset that
    appeared meanwhile with the same ``fingerprint`` is kept and ``reused`` set
    to its manifest; any other is refused). With ``overwrite`` the last commit
    wins, whole. See the module doc for how, locally and on object stores.
    """

    def __init__(
        self,
        output: str,
        storage: Any = None,
        overwrite: bool = False,
        fingerprint: str | None = None,
    ):
        self.output = output
        self.storage = storage
        self.overwrite = overwrite
        self.fingerprint = fingerprint
        self.remote = is_remote(output)
        self.reused: dict | None = None
        self.lock: PrefixLock | None = None
        self.path: str | None = None  # where files are written (none when a dataset is reused)
        self._streams: list = []
        self.fs, self.final_path = filesystem(output, storage)
        if self.remote:
            if "/" not in self.final_path.strip("/"):
                raise StorageError(
                    f"output {output} is a whole bucket: give a prefix inside it, "
                    "e.g. s3://bucket/datasets/sft-v1"
                )
            self.path = self.final_path
            self._begin_remote()
        else:
            parent, name = os.path.split(self.final_path)
            if not name:
                raise StorageError(f"output {output} is not a directory name gymray can create")
            state, manifest = refuse_unless_replaceable(output, storage, overwrite)
            if not self._may_write(state, manifest):
                return
            with writing(output):
                os.makedirs(parent, exist_ok=True)
                _clean_stale_local(parent, name)
                self.path = os.path.join(
                    parent, f".{name}{TMP_TAG}{host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                )
                os.makedirs(self.path)

    def _may_write(self, state: OutputState, manifest: dict | None) -> bool:
        """False when an identical dataset is published (then ``reused`` is set);
        raises when another one is and overwrite is off."""
        if state != "dataset" or self.overwrite:
            return True
        self._reuse_identical(manifest, self.fingerprint)
        return False

    def _reuse_identical(self, existing: dict, fingerprint: str | None) -> dict:
        """A dataset another run published meanwhile: kept as ``reused`` when it is
        identical (same fingerprint), else refused."""
        if fingerprint is not None and existing.get("fingerprint") == fingerprint:
            self.reused = existing
            return existing
        raise StorageError(
            f"another gymray run wrote {self.output} meanwhile (fingerprint "
            f"{existing.get('fingerprint')}): set overwrite=true to replace it, or choose "
            "another output"
        )

    def _begin_remote(self) -> None:
        self.lock = lock = PrefixLock(self.fs, self.path, self.output)
        busy = lock.busy()
        if busy is not None:
            raise StorageError(lock.busy_message(busy))
        state, manifest = refuse_unless_replaceable(self.output, self.storage, self.overwrite)
        if not self._may_write(state, manifest):
            return
        left = lock.owner()
        if left is not None:
            log.info("%s holds an unfinished write (%s): replacing it", self.output, who(left))
        lock.acquire()
        try:
            # A run may have published between the check above and the marker.
            state, manifest = inspect_output(self.output, self.storage)
            if not self._may_write(state, manifest):
                lock.release()
                return
            if state == "dataset":
                # Un-publish first: from here on readers see "no dataset", never the
                # old manifest over a mix of old and new objects.
                self.fs.delete_file(posixpath.join(self.path, MANIFEST))
            self._clear(keep_marker=True)
        except OSError as e:
            lock.release()
            raise write_error(e, self.output) from None
        except BaseException:
            lock.release()
            raise

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

    def check_owner(self) -> None:
        """Raise if another run took the output over (object stores; see
        :mod:`gymray.storage.lock`). Called before the files are assembled."""
        if self.lock is not None:
            self.lock.check()

    def commit(self, manifest: dict) -> dict:
        """Publish; return the manifest now at the output: this one, or the one of
        an identical dataset another run published meanwhile (``reused``)."""
        self._close_streams()
        if self.remote:
            return self._commit_remote(manifest)
        self._write_manifest(manifest)
        return self._publish_local(manifest)

    def _write_manifest(self, manifest: dict) -> None:
        with writing(self.output, MANIFEST), self.open(MANIFEST) as f:
            f.write(
                orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )

    def _commit_remote(self, manifest: dict) -> dict:
        lock = self.lock
        lock.stop()  # no heartbeat may rewrite the marker once the manifest is there
        lock.check()
        existing = read_manifest(self.output, self.storage)
        if is_dataset_manifest(existing) and not self.overwrite:
            # Only a writer that ignores markers (an older gymray) gets here: leave its
            # dataset to it.
            lock.release()
            return self._reuse_identical(existing, manifest.get("fingerprint"))
        self._write_manifest(manifest)
        # Published by the manifest above; the marker only matters without one.
        lock.release()
        return manifest

    def _publish_local(self, manifest: dict) -> dict:
        """Rename the staging directory into place, only where nothing is (a
        rename onto a non-empty directory or a file fails): compare-and-publish.
        With overwrite, a dataset found there is moved aside first; should another
        run publish in between, the loop moves that one aside too: last one wins."""
        parent, name = os.path.split(self.final_path)
        olds = []
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                os.rename(self.path, self.final_path)
                break
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise
            # Only a gymray dataset is ever moved aside (and deleted).
            state, existing = refuse_unless_replaceable(self.output, self.storage, overwrite=True)
            if state != "dataset":
                continue  # it went away meanwhile: try again
            if not self.overwrite:
                shutil.rmtree(self.path, ignore_errors=True)
                self.path = None
                return self._reuse_identical(existing, manifest.get("fingerprint"))
            old = os.path.join(parent, f".{name}{OLD_TAG}{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.final_path, old)
            except FileNotFoundError:
                continue  # another run moved it aside first
            olds.append(old)
        else:
            raise StorageError(
                f"could not publish {self.output}: other gymray runs kept replacing it "
                f"({PUBLISH_ATTEMPTS} tries); rerun when they are done"
            )
        for old in olds:
            _remove(old)
        return manifest

    def abort(self) -> None:
        self._close_streams()
        try:
            if self.lock is not None:
                self.lock.stop()
                # Another run's prefix now, if it took over: nothing of it is deleted.
                if self.lock.held and self.lock.owned():
                    self._clear(keep_marker=False)
                self.lock.release()
            elif not self.remote and self.path:
                shutil.rmtree(self.path, ignore_errors=True)
        except OSError:
            pass  # the next run cleans up (marker / stale tmp dir)


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
    this_host = host()
    for entry in os.listdir(parent):
        full = os.path.join(parent, entry)
        if entry.startswith(old_prefix):
            _remove(full)
            continue
        if not entry.startswith(tmp_prefix):
            continue
        try:
            owner_host, pid, _ = entry[len(tmp_prefix) :].rsplit("-", 2)
            if owner_host == this_host:
                stale = not pid_alive(int(pid))
            else:
                stale = time.time() - _newest_mtime(full) > STALE_SECONDS
        except (ValueError, OSError):
            continue
        if stale:
            log.info("removing %s, left by an unfinished gymray run", full)
            _remove(full)
