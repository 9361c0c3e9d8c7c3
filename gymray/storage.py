"""Paths and file systems (local, NFS, s3://, gs://), input listing, atomic commit.

Everything goes through pyarrow file systems so the same code reads and writes
local paths and object stores. A dataset directory is published atomically:

* local / NFS: written into a hidden temporary sibling
  (``.<name>.gymray-tmp-<host>-<pid>-<rand>``), then renamed into place;
* object stores: a ``_gymray_writing.json`` marker first, then the data objects,
  then ``manifest.json`` last. A prefix without a manifest is not a dataset:
  readers (and gymray's own reuse check) treat it as absent, and the next run
  deletes what a crashed run left there.

Credentials come from the usual environment of each process that touches the
data (the driver writes, Ray workers read): ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_PROFILE`` for S3,
``GOOGLE_APPLICATION_CREDENTIALS`` for GCS. Nothing secret is ever put in
settings, manifests or logs.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from gymray.rollouts import is_sidecar

log = logging.getLogger("gymray")

MANIFEST = "manifest.json"
# Written first on object stores, deleted after the manifest: a prefix holding it
# and no manifest is a write in progress or a crashed one, never a dataset.
WRITING_MARKER = "_gymray_writing.json"
ROLLOUT_SUFFIXES = (".jsonl", ".jsonl.gz")
GZIP_MAGIC = b"\x1f\x8b"
GLOB_CHARS = "*?["
# A temporary dir of another host cannot be checked for a live owner: it is
# taken as abandoned once nothing in it changed for this long.
STALE_SECONDS = 24 * 3600
TMP_TAG = ".gymray-tmp-"
OLD_TAG = ".gymray-old-"
MATERIALIZED = "gymray-materialized.json"


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


# --------------------------------------------------------------------------- file systems
def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_remote(uri: str) -> bool:
    return _scheme(uri) not in ("", "file")


def _opt(storage: Any, name: str) -> Any:
    """A storage setting from the pydantic model, a plain dict, or None."""
    if storage is None:
        return None
    if isinstance(storage, dict):
        return storage.get(name)
    return getattr(storage, name, None)


def _s3_endpoint(storage: Any) -> tuple[str, str] | None:
    """(scheme, host[:port]) of an S3-compatible endpoint, or None for AWS itself."""
    raw = (
        _opt(storage, "endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not raw:
        return None
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    if parts.username or parts.password:
        # The endpoint is recorded in the manifest: keys must come from the environment.
        raise StorageError(
            "the S3 endpoint URL holds credentials; give the bare URL in storage.endpoint_url "
            "or AWS_ENDPOINT_URL and the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StorageError(
            f"S3 endpoint {raw!r} is not an http(s) URL (expected e.g. http://minio:9000)"
        )
    return parts.scheme, parts.netloc


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    # Only for AWS itself with no region configured: a bucket answers only in its own
    # region. One unauthenticated HEAD per bucket and process.
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return None


# File systems are cached per process (a Ray worker opens many inputs), keyed by
# their options, which are re-read from the environment on every call; the key id
# and profile are in the key so that changed credentials get a new client.
@functools.lru_cache(maxsize=16)
def _s3(
    endpoint: tuple[str, str] | None,
    region: str | None,
    anonymous: bool,
    identity: tuple[str | None, str | None],
) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {"allow_bucket_creation": True}
    if endpoint:
        kwargs.update(scheme=endpoint[0], endpoint_override=endpoint[1])
    if region:
        kwargs["region"] = region
    if anonymous:
        kwargs["anonymous"] = True
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=4)
def _gcs(anonymous: bool) -> pafs.FileSystem:
    # Default credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC, or the VM's.
    return pafs.GcsFileSystem(anonymous=True) if anonymous else pafs.GcsFileSystem()


def filesystem(uri: str, storage: Any = None) -> tuple[pafs.FileSystem, str]:
    """(file system, path inside it) for a local path or a URI.

    S3: endpoint from ``storage.endpoint_url``, ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``; region from ``storage.region``, ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``; credentials from the AWS SDK's usual chain.
    """
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:
        raise StorageError(
            f"{_redact_uri(uri)}: credentials in the URI are not accepted (they would be "
            "recorded in the manifest); set them in the environment instead"
        )
    if not bucket:
        raise StorageError(f"{uri}: no bucket name")
    path = posixpath.normpath(rest) if rest.strip("/") else bucket
    anonymous = bool(_opt(storage, "anonymous"))
    if scheme in ("s3", "s3a"):
        endpoint = _s3_endpoint(storage)
        region = (
            _opt(storage, "region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region:
            # S3-compatible stores accept any region; AWS wants the bucket's own.
            region = "us-east-1" if endpoint else _bucket_region(bucket)
        identity = (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
        return _s3(endpoint, region, anonymous, identity), path
    if scheme in ("gs", "gcs"):
        return _gcs(anonymous), path
    raise StorageError(
        f"unsupported URI scheme '{scheme}://' in {uri} (use a local path, s3:// or gs://)"
    )


def _redact_uri(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    bucket, sep, key = rest.partition("/")
    return f"{scheme}://<credentials>@{bucket.rsplit('@', 1)[-1]}{sep}{key}"


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


# --------------------------------------------------------------------------- inputs
def _segment_regex(seg: str) -> str:
    """One path segment of a glob: ``*`` and ``?`` never cross ``/``, ``[..]`` /
    ``[!..]`` are character classes, and (as in a shell) a wildcard at the start
    of a segment does not match a hidden name."""
    out = ["(?!\\.)"] if seg[:1] in ("*", "?", "[") else []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(seg) and seg[j] in "!^":
                j += 1
            if j < len(seg) and seg[j] == "]":  # a leading ']' is a literal member
                j += 1
            while j < len(seg) and seg[j] != "]":
                j += 1
            if j >= len(seg):  # no closing bracket: a literal '['
                out.append("\\[")
            else:
                body = seg[i + 1 : j]
                neg = body[:1] in ("!", "^")
                body = body[1:] if neg else body
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[{'^/' if neg else ''}{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern:
    """A compiled regex for a ``/``-separated glob with ``*``, ``?``, ``[..]`` and
    ``**`` (a whole segment: zero or more directories)."""
    segs = pattern.split("/")
    out = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            # Not hidden directories (.git, gymray's own .tmp dirs), like a shell.
            out.append(r"(?!\.)[^/]+(?:/(?!\.)[^/]+)*" if last else r"(?:(?!\.)[^/]+/)*")
        else:
            out.append(_segment_regex(seg) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _has_glob(path: str) -> bool:
    return any(c in path for c in GLOB_CHARS)


def _is_rollout_name(name: str) -> bool:
    return name.endswith(ROLLOUT_SUFFIXES) and not is_sidecar(name)


def _list(fs: pafs.FileSystem, base: str, rel_pattern: str) -> list[pafs.FileInfo]:
    """Rollout files under ``base`` whose path relative to it matches ``rel_pattern``
    (a glob; ``base`` itself is taken literally, glob characters and all)."""
    segs = rel_pattern.split("/")
    recursive = len(segs) > 1 or "**" in segs
    regex = glob_regex(rel_pattern)
    start = len(base.rstrip("/")) + 1
    sel = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
    return [
        i
        for i in fs.get_file_info(sel)
        if i.type == pafs.FileType.File
        and regex.match(i.path[start:])
        and _is_rollout_name(i.base_name)
    ]


def _glob(fs: pafs.FileSystem, pattern: str, uri: str) -> list[pafs.FileInfo]:
    segs = pattern.split("/")
    first = next(i for i, s in enumerate(segs) if _has_glob(s))
    if first == 0 and is_remote(uri):
        raise StorageError(f"{uri}: a glob in the bucket name is not supported")
    base = "/".join(segs[:first]) or "/"
    return _list(fs, base, "/".join(segs[first:]))


def expand_inputs(patterns: list[str], storage: Any = None) -> list[InputFile]:
    """Files, directories (recursive) and globs -> rollout files, sorted by URI.

    Directories and globs take ``*.jsonl`` and ``*.jsonl.gz`` and skip the sidecar
    files NeMo Gym writes beside rollouts and hidden files; a file named
    explicitly is taken as is. Globs: ``*``, ``?``, ``[..]`` within a path
    segment, ``**`` for any number of directories, on local paths and object
    stores alike (``s3://b/r/*.jsonl``, ``s3://b/r/**/*.jsonl``).
    """
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        fs, path = filesystem(pattern, storage)
        prefix = pattern.split("://", 1)[0] + "://" if is_remote(pattern) else ""
        try:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                matched = [info]
            elif info.type == pafs.FileType.Directory:
                matched = _list(fs, path, "**")
            elif _has_glob(path):
                matched = _glob(fs, path, pattern)
            else:
                raise StorageError(f"input not found: {pattern}")
        except OSError as e:
            raise StorageError(f"cannot list input {pattern}: {e}") from None
        if not matched:
            raise StorageError(
                f"input {pattern} matches no rollout files (*.jsonl, *.jsonl.gz; "
                "NeMo Gym sidecar files and hidden files are skipped)"
            )
        for i in matched:
            uri = f"{prefix}{i.path}"
            mtime = i.mtime_ns if i.mtime_ns is not None else 0
            found[uri] = InputFile(uri=uri, path=i.path, size=i.size or 0, mtime_ns=mtime)
    return [found[k] for k in sorted(found)]


def open_input(f: InputFile, storage: Any = None):
    """A byte stream of a rollout file (gunzipped for ``*.gz``)."""
    fs, path = filesystem(f.uri, storage)
    try:
        if not path.endswith(".gz"):
            return fs.open_input_stream(path, compression=None, buffer_size=1 << 20)
        with fs.open_input_stream(path, compression="gzip") as probe:
            head = probe.read(2)
        stream = fs.open_input_stream(path, compression="gzip", buffer_size=1 << 20)
        if head == GZIP_MAGIC:
            # Still gzip after one gunzip: the server added a gzip layer of its own
            # (SeaweedFS does this for *.gz objects, so do some gzip-ing proxies; the
            # AWS SDK does not strip it). A JSONL file never starts with these bytes.
            stream = pa.CompressedInputStream(stream, "gzip")
        return stream
    except OSError as e:
        hint = (
            " (Ray workers read inputs with the credentials in their own environment)"
            if is_remote(f.uri)
            else ""
        )
        raise StorageError(f"cannot read input {f.uri}: {e}{hint}") from None


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


def output_state(output: str, storage: Any = None) -> OutputState:
    """What is at ``output`` now: a committed dataset, nothing, the leftovers of an
    unfinished gymray write (object stores; they are replaced without asking),
    or something else (replaced only with ``overwrite=true``)."""
    fs, path = filesystem(output, storage)
    if read_manifest(output, storage) is not None:
        return "dataset"
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return "absent"
        if info.type != pafs.FileType.Directory:
            return "other"
        names = {
            i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        }
    except OSError as e:
        raise StorageError(f"cannot list output {output}: {e}") from None
    if not names:
        return "absent"
    return "unfinished" if WRITING_MARKER in names else "other"


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
        elif output_state(self.output, self.storage) == "other" and not overwrite:
            raise StorageError(
                f"{self.output} exists and is not a gymray dataset: choose another output "
                "or set overwrite=true"
            )
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


# --------------------------------------------------------------------------- NeMo RL side
def local_dataset_path(output: str, materialize_to: str | None = None, storage: Any = None) -> str:
    """A local directory with the committed dataset's ``train.jsonl`` (and
    ``val.jsonl``) that NeMo RL can open.

    A local output is returned as is. An object-store output is copied (JSONL
    files plus a manifest) to ``<materialize_to>/<name>-<fingerprint[:12]>`` once;
    later calls reuse the copy. Without ``materialize_to`` it raises, naming the
    setting, because NeMo RL reads its data files from local paths only.

    Example::

        path = local_dataset_path("s3://b/ds/sft-v1", "/lustre/gymray-cache")
        # -> /lustre/gymray-cache/sft-v1-0123456789ab (train.jsonl, val.jsonl, manifest.json)
    """
    manifest = read_manifest(output, storage)
    if not manifest or not (manifest.get("files") or {}).get("train"):
        raise StorageError(
            f"{output} holds no committed gymray dataset (no readable {MANIFEST}): prepare "
            f"it first (python -m gymray.run <algo> input=... output={output} --prepare-only)"
        )
    if not is_remote(output):
        return filesystem(output)[1]
    if not materialize_to:
        raise StorageError(
            f"dataset {output} is in an object store and NeMo RL reads its data files from "
            "local paths: set storage.materialize_to=<a directory every training node can "
            "read, e.g. on Lustre/NFS> to copy train/val there, or write the dataset to a "
            "shared path (output=/shared/...)"
        )
    if is_remote(materialize_to):
        raise StorageError(
            f"storage.materialize_to={materialize_to} must be a local or shared (NFS/Lustre) "
            "directory, not an object store"
        )
    fingerprint = str(manifest.get("fingerprint", ""))
    name = posixpath.basename(output.rstrip("/"))
    dest = os.path.join(
        os.path.abspath(os.path.expanduser(materialize_to)), f"{name}-{fingerprint[:12]}"
    )
    done = read_manifest(dest)
    if done is not None and done.get("fingerprint") == fingerprint:
        return dest
    files = manifest.get("files") or {}
    wanted = [files[k] for k in ("train", "val") if files.get(k)]
    fs, src = filesystem(output, storage)
    staging = Staging(dest, overwrite=True)
    try:
        for rel in wanted:
            with fs.open_input_stream(posixpath.join(src, rel)) as r, staging.open(rel) as w:
                while chunk := r.read(8 << 20):
                    w.write(chunk)
        local = {
            **manifest,
            "output": dest,
            "materialized_from": output,
            # Only the JSONL NeMo RL reads is copied; the rest stays at the source.
            "files": {
                **{k: files.get(k) for k in ("train", "val")},
                "parquet": {"train": [], "val": []},
            },
        }
        staging.commit(local)
    except OSError as e:
        staging.abort()
        raise StorageError(f"cannot copy {output} to {dest}: {e}") from None
    except BaseException:
        staging.abort()
        raise
    log.info("copied %s (%s) to %s for NeMo RL", output, ", ".join(wanted), dest)
    return dest
