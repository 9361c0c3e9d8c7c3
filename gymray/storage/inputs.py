"""Input listing: files, directories and globs to rollout files; opening them."""

from __future__ import annotations

import os
import posixpath
import re
import stat
import zlib
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from gymray.errors import StorageError, UnreadableInput
from gymray.rollouts import is_sidecar
from gymray.storage.fs import filesystem, is_remote

ROLLOUT_SUFFIXES = (".jsonl", ".jsonl.gz")
GZIP_MAGIC = b"\x1f\x8b"
GLOB_CHARS = "*?["


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
    if isinstance(fs, pafs.LocalFileSystem):
        infos = _walk_local(base, recursive)
    else:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
    return [
        i
        for i in infos
        if i.type == pafs.FileType.File
        and regex.match(i.path[start:])
        and _is_rollout_name(i.base_name)
    ]


def _walk_local(base: str, recursive: bool) -> list[pafs.FileInfo]:
    """The files under a local directory, following symlinks to directories (as
    pyarrow's listing does) but entering each directory once, by device and
    inode: pyarrow follows a link back to its own directory 40 levels deep, one
    file then becomes 41 inputs, and two such links take exponential time."""
    try:
        st = os.stat(base)
    except FileNotFoundError:
        return []
    seen = {(st.st_dev, st.st_ino)}
    out: list[pafs.FileInfo] = []
    todo = [base]
    while todo:
        folder = todo.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        below = []
        for e in entries:
            try:
                st = e.stat()  # through symlinks
            except OSError:  # a dangling link, or a link to itself: nothing to read
                continue
            if stat.S_ISREG(st.st_mode):
                out.append(
                    pafs.FileInfo(
                        e.path, pafs.FileType.File, size=st.st_size, mtime_ns=st.st_mtime_ns
                    )
                )
            elif recursive and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                below.append(e.path)
        todo += reversed(below)  # depth first, in name order
    return out


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
    # A local file reached by several names (symlinks, hard links, a directory and
    # a glob over it) is read once, under the first of its names in sorted order.
    names: dict[tuple[int, int], str] = {}
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
            if isinstance(fs, pafs.LocalFileSystem):
                try:
                    st = os.stat(i.path)
                except OSError as e:
                    raise StorageError(f"cannot read input {uri}: {e}") from None
                other = names.setdefault((st.st_dev, st.st_ino), uri)
                if other < uri:
                    continue
                if other != uri:
                    del found[other]
                    names[(st.st_dev, st.st_ino)] = uri
            mtime = i.mtime_ns if i.mtime_ns is not None else 0
            found[uri] = InputFile(uri=uri, path=i.path, size=i.size or 0, mtime_ns=mtime)
    return [found[k] for k in sorted(found)]


def existing_file(uri: str, storage: Any = None) -> InputFile | None:
    """The file at ``uri`` if there is one (a sidecar gymray may read), else None."""
    fs, path = filesystem(uri, storage)
    try:
        info = fs.get_file_info(path)
    except OSError:
        return None
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return InputFile(uri=uri, path=path, size=info.size or 0, mtime_ns=mtime)


def open_input(f: InputFile, storage: Any = None):
    """A byte stream of a rollout file (gunzipped for ``*.gz``). A ``.gz`` file
    that breaks (cut short, corrupt, not gzip) raises :class:`UnreadableInput`
    from ``read`` once every byte decoded before the break has been read."""
    fs, path = filesystem(f.uri, storage)
    try:
        if not path.endswith(".gz"):
            return fs.open_input_stream(path, compression=None, buffer_size=1 << 20)
        stream = GunzipStream(fs.open_input_stream(path, compression=None), f.uri)
    except OSError as e:
        hint = (
            " (Ray workers read inputs with the credentials in their own environment)"
            if is_remote(f.uri)
            else ""
        )
        raise StorageError(f"cannot read input {f.uri}: {e}{hint}") from None
    if stream.peek(2) == GZIP_MAGIC:
        # Still gzip after one gunzip: the server added a gzip layer of its own
        # (SeaweedFS does this for *.gz objects, so do some gzip-ing proxies; the
        # AWS SDK does not strip it). A JSONL file never starts with these bytes.
        stream = GunzipStream(stream, f.uri)
    return stream


class GunzipStream:
    """Gunzips a byte stream with Python's zlib (pyarrow's gzip stream loses the
    whole read that meets a break, and does not say where it is).

    ``read(n)`` returns every byte decoded before a break; the next ``read``
    raises :class:`UnreadableInput` saying what broke and where (``read()`` of
    everything raises at once). Concatenated gzip members are one stream. The
    input is read and decoded in fixed steps whatever the caller's read sizes,
    so what comes out before a break, and the message, never depend on them.
    """

    READ = 1 << 20  # compressed bytes a read of the file
    # decoded bytes a step: what a corrupt stream loses before its break is at most
    # this (zlib's error drops the step's output)
    STEP = 64 << 10

    def __init__(self, raw, uri: str):
        self.raw, self.uri = raw, uri
        self.z: Any = None  # the decoder of the current member
        self.member_at = 0  # where it starts in the compressed stream
        self.tail = b""  # compressed bytes read and not decoded yet
        self.head = b""  # the file's first bytes, for the error message
        self.compressed = 0  # bytes read from ``raw``
        self.uncompressed = 0  # bytes decoded
        self.buf = memoryview(b"")  # decoded, not read yet
        self.error: UnreadableInput | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.raw.close()

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes, left to be read (fewer at the end or a break)."""
        while len(self.buf) < n and self.error is None:
            piece = self._next()
            if not piece:
                break
            self.buf = memoryview(bytes(self.buf) + piece)
        return bytes(self.buf[:n])

    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else None
        parts, have = [], 0
        while want is None or have < want:
            if not self.buf:
                if self.error is not None:
                    if want is None or not have:
                        raise self.error
                    break  # raised by the next read
                piece = self._next()
                if not piece:
                    if self.error is None:
                        break  # the end
                    continue  # a break: what was read so far goes first
                self.buf = memoryview(piece)
            take = len(self.buf) if want is None else min(want - have, len(self.buf))
            parts.append(self.buf[:take])
            self.buf = self.buf[take:]
            have += take
        return b"".join(parts)

    def _next(self) -> bytes:
        """The next decoded bytes; empty at the end, or at a break (kept in ``error``)."""
        try:
            return self._decode()
        except UnreadableInput as e:
            self.error = e
            return b""

    def _read_raw(self) -> bytes:
        try:
            data = self.raw.read(self.READ)
        except OSError as e:
            raise StorageError(
                f"cannot read input {self.uri} at byte {self.compressed}: {e}"
            ) from None
        if not self.compressed:
            self.head = bytes(data[:8])
        self.compressed += len(data)
        return data

    def _decode(self) -> bytes:
        """The next decoded bytes (at most STEP); empty after the last member."""
        while True:
            at_end = False
            if self.z is None:
                if not self.tail:
                    self.tail = self._read_raw()
                    if not self.tail:
                        return b""
                self.z = zlib.decompressobj(wbits=31)
                self.member_at = self.compressed - len(self.tail)
            data, self.tail = self.tail, b""
            if not data:
                data = self._read_raw()
                at_end = not data
            try:
                out = self.z.decompress(data, self.STEP)
            except zlib.error as e:
                raise self._broken(str(e), self.compressed - len(data)) from None
            self.tail = self.z.unconsumed_tail
            if self.z.eof:
                self.tail, self.z = self.z.unused_data, None
            if out:
                self.uncompressed += len(out)
                return out
            if at_end and self.z is not None:
                raise UnreadableInput(
                    f"gzip stream truncated after {self.compressed} bytes "
                    f"({self.uncompressed} bytes uncompressed): the file was cut short "
                    "(an interrupted copy or write?)"
                )

    def _broken(self, reason: str, at: int) -> UnreadableInput:
        if "header" in reason and at == self.member_at:
            if not self.member_at:
                return UnreadableInput(
                    f"not a gzip file (it starts with {self.head.hex(' ')}): name it "
                    "*.jsonl if it is not compressed"
                )
            return UnreadableInput(
                f"the {self.compressed - self.member_at} bytes after the gzip data end "
                f"(at compressed byte {self.member_at}) are not gzip"
            )
        return UnreadableInput(
            f"corrupt gzip data at compressed byte {at} or after "
            f"({self.uncompressed} bytes uncompressed): {reason}"
        )
