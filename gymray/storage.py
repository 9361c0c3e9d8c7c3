"""Paths and file systems (local, NFS, s3://, gs://), input listing, atomic commit.

Everything goes through pyarrow file systems so the same code reads and writes
local paths and object stores. A dataset directory is published atomically:

* local / NFS: written into a hidden temporary sibling, then renamed;
* object stores: data objects first, ``manifest.json`` last; a prefix without a
  manifest is not a dataset (readers, and gymray's own reuse check, treat it
  as absent, and the next run deletes what a crashed run left there).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow.fs as pafs

from gymray.rollouts import is_sidecar

MANIFEST = "manifest.json"
ROLLOUT_SUFFIXES = (".jsonl", ".jsonl.gz")
GLOB_CHARS = "*?["
STALE_SECONDS = 24 * 3600


class StorageError(RuntimeError):
    """A path cannot be read or written; the message says which and why."""


@dataclass(frozen=True)
class InputFile:
    uri: str  # as the user would write it (scheme kept for object stores)
    path: str  # path inside ``fs``
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def key(self) -> list:
        return [self.uri, self.size, self.mtime_ns]


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_remote(uri: str) -> bool:
    return _scheme(uri) not in ("", "file")


def filesystem(uri: str, storage: Any = None) -> tuple[pafs.FileSystem, str]:
    """(file system, path inside it) for a local path or URI.

    S3 credentials come from the usual environment (``AWS_ACCESS_KEY_ID``...),
    the endpoint from ``storage.endpoint_url`` or ``AWS_ENDPOINT_URL``.
    """
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    rest = uri.split("://", 1)[1].rstrip("/")
    if scheme in ("s3", "s3a"):
        endpoint = (
            getattr(storage, "endpoint_url", None)
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        kwargs: dict[str, Any] = {"allow_bucket_creation": True}
        if endpoint:
            ep_scheme, _, host = (
                endpoint.partition("://") if "://" in endpoint else ("https", "", endpoint)
            )
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=ep_scheme)
        region = (
            getattr(storage, "region", None)
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if region:
            kwargs["region"] = region
        if getattr(storage, "anonymous", False):
            kwargs["anonymous"] = True
        return pafs.S3FileSystem(**kwargs), rest
    if scheme in ("gs", "gcs"):
        kwargs = {"anonymous": True} if getattr(storage, "anonymous", False) else {}
        return pafs.GcsFileSystem(**kwargs), rest
    raise StorageError(
        f"unsupported URI scheme '{scheme}://' in {uri} (use a local path, s3:// or gs://)"
    )


def _uri(uri_prefix: str, path: str) -> str:
    return f"{uri_prefix}{path}" if uri_prefix else path


def _is_rollout_name(name: str) -> bool:
    return name.endswith(ROLLOUT_SUFFIXES) and not is_sidecar(name)


def expand_inputs(patterns: list[str], storage: Any = None) -> list[InputFile]:
    """Files, directories (recursive) and globs -> sorted rollout files.

    Directories and globs take ``*.jsonl`` and ``*.jsonl.gz`` and skip the sidecar
    files NeMo Gym writes beside rollouts; a file named explicitly is taken as is.
    """
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        fs, path = filesystem(pattern, storage)
        prefix = pattern.split("://", 1)[0] + "://" if is_remote(pattern) else ""
        matched: list[pafs.FileInfo] = []
        try:
            if any(c in path for c in GLOB_CHARS):
                base = path
                while any(c in base for c in GLOB_CHARS):
                    base = posixpath.dirname(base)
                sel = pafs.FileSelector(
                    base, recursive="**" in path or path.count("/") > base.count("/") + 1
                )
                regex_path = path.replace("**/", "*")
                matched = [
                    i
                    for i in fs.get_file_info(sel)
                    if i.type == pafs.FileType.File
                    and fnmatch.fnmatchcase(i.path, regex_path)
                    and _is_rollout_name(i.base_name)
                ]
            else:
                info = fs.get_file_info(path)
                if info.type == pafs.FileType.Directory:
                    sel = pafs.FileSelector(path, recursive=True)
                    matched = [
                        i
                        for i in fs.get_file_info(sel)
                        if i.type == pafs.FileType.File and _is_rollout_name(i.base_name)
                    ]
                elif info.type == pafs.FileType.File:
                    matched = [info]
                else:
                    raise StorageError(f"input not found: {pattern}")
        except OSError as e:
            raise StorageError(f"cannot list input {pattern}: {e}") from None
        if not matched:
            raise StorageError(
                f"input {pattern} matches no rollout files (*.jsonl, *.jsonl.gz; sidecars skipped)"
            )
        for i in matched:
            uri = _uri(prefix, i.path)
            mtime = i.mtime_ns if i.mtime_ns is not None else 0
            found[uri] = InputFile(uri=uri, path=i.path, size=i.size or 0, mtime_ns=mtime)
    return [found[k] for k in sorted(found)]


def open_input(f: InputFile, storage: Any = None):
    fs, path = filesystem(f.uri, storage)
    return fs.open_input_stream(
        path, compression="gzip" if path.endswith(".gz") else None, buffer_size=1 << 20
    )


def read_bytes(uri: str, storage: Any = None) -> bytes | None:
    fs, path = filesystem(uri, storage)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


def read_manifest(output: str, storage: Any = None) -> dict | None:
    """The committed manifest of a dataset, or None when there is no dataset."""
    raw = read_bytes(join(output, MANIFEST), storage)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


class Staging:
    """Where a dataset is written before it is published.

    ``open(relpath)`` gives a writable stream; ``commit(manifest)`` publishes;
    ``abort()`` removes what was written.
    """

    def __init__(self, output: str, storage: Any = None, overwrite: bool = False):
        self.output = output
        self.storage = storage
        self.remote = is_remote(output)
        self.fs, self.final_path = filesystem(output, storage)
        if self.remote:
            self.path = self.final_path
            self._clear_remote(overwrite)
        else:
            parent, name = os.path.split(self.final_path)
            os.makedirs(parent, exist_ok=True)
            _clean_stale_local(parent, name)
            self.path = os.path.join(
                parent,
                f".{name}.gymray-tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            )
            os.makedirs(self.path)

    def _clear_remote(self, overwrite: bool) -> None:
        manifest = posixpath.join(self.path, MANIFEST)
        if self.fs.get_file_info(manifest).type == pafs.FileType.File:
            if not overwrite:
                raise StorageError(
                    f"{self.output} holds a dataset; set overwrite=true to replace it"
                )
            # Un-publish first, so no reader sees the old manifest over new objects.
            self.fs.delete_file(manifest)
        if self.fs.get_file_info(self.path).type == pafs.FileType.Directory:
            self.fs.delete_dir_contents(self.path, missing_dir_ok=True)

    def local_path(self, relpath: str) -> str:
        return (
            posixpath.join(self.path, relpath) if self.remote else os.path.join(self.path, relpath)
        )

    def open(self, relpath: str):
        path = self.local_path(relpath)
        if not self.remote:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return self.fs.open_output_stream(path, buffer_size=1 << 20)

    def delete(self, relpath: str) -> None:
        self.fs.delete_file(self.local_path(relpath))

    def commit(self, manifest: dict) -> None:
        with self.open(MANIFEST) as f:
            f.write(
                orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
        if self.remote:
            return
        old = None
        if os.path.lexists(self.final_path):
            old = f"{self.final_path}.gymray-old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final_path, old)
        os.rename(self.path, self.final_path)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        try:
            if self.remote:
                self.fs.delete_dir_contents(self.path, missing_dir_ok=True)
            else:
                shutil.rmtree(self.path, ignore_errors=True)
        except OSError:
            pass


def _clean_stale_local(parent: str, name: str) -> None:
    """Remove temporary dirs that crashed runs left beside ``name``."""
    host = socket.gethostname()
    for entry in os.listdir(parent):
        if not (
            entry.startswith(f".{name}.gymray-tmp-") or entry.startswith(f"{name}.gymray-old-")
        ):
            continue
        full = os.path.join(parent, entry)
        stale = False
        try:
            owner_host, pid, _ = entry[len(f".{name}.gymray-tmp-") :].rsplit("-", 2)
            if owner_host == host:
                stale = not _pid_alive(int(pid))
        except ValueError:
            pass
        try:
            stale = (
                stale
                or time.time() - os.path.getmtime(full) > STALE_SECONDS
                or entry.startswith(f"{name}.gymray-old-")
            )
        except OSError:
            continue
        if stale:
            shutil.rmtree(full, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
