"""Input listing and opening on a real local file system: hostile trees and files."""

from __future__ import annotations

import gzip
import os

import pytest

from gymray.errors import UnreadableInput
from gymray.storage import expand_inputs, open_input

LINE = b'{"reward": 1}\n'


def test_a_directory_symlink_loop_is_listed_once(tmp_path):
    """A link back to its own directory was followed 40 levels deep: one 3-line
    file became 41 inputs."""
    d = tmp_path / "runs"
    d.mkdir()
    (d / "a.jsonl").write_bytes(LINE * 3)
    os.symlink(d, d / "loop")
    os.symlink("..", d / "up")
    (f,) = expand_inputs([str(d)])
    assert f.uri == str(d / "a.jsonl")


def test_each_real_file_is_read_once_whatever_leads_to_it(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "s.jsonl").write_bytes(LINE)
    d = tmp_path / "runs"
    (d / "x").mkdir(parents=True)
    (d / "x" / "a.jsonl").write_bytes(LINE)
    os.symlink(d / "x" / "a.jsonl", d / "b.jsonl")  # a file link: the file itself
    os.link(d / "x" / "a.jsonl", d / "c.jsonl")  # a hard link: the same file
    os.symlink(shared, d / "one")  # two links to one directory outside the tree
    os.symlink(shared, d / "two")
    os.symlink(tmp_path / "missing", d / "dangling.jsonl")
    found = expand_inputs([str(d), str(d / "x" / "a.jsonl"), str(d / "**" / "*.jsonl")])
    # the first name of each file, in sorted order, stands for it
    assert [f.uri for f in found] == [str(d / "b.jsonl"), str(d / "one" / "s.jsonl")]


def test_a_glob_through_a_symlink_loop_ends(tmp_path):
    d = tmp_path / "runs"
    (d / "x").mkdir(parents=True)
    (d / "x" / "a.jsonl").write_bytes(LINE)
    os.symlink(d, d / "x" / "back")
    found = expand_inputs([str(d / "**" / "*.jsonl")])
    assert [f.uri for f in found] == [str(d / "x" / "a.jsonl")]


# --------------------------------------------------------------------------- broken gzip
def _read_all(f):
    out = []
    with pytest.raises(UnreadableInput) as e, open_input(f) as stream:
        while True:
            chunk = stream.read(1000)
            if not chunk:
                break
            out.append(chunk)
    return b"".join(out), str(e.value)


def test_a_truncated_gzip_gives_every_byte_before_the_cut_then_says_so(tmp_path):
    data = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 97)) for i in range(5000))
    packed = gzip.compress(data)
    cut = len(packed) * 2 // 3
    (tmp_path / "t.jsonl.gz").write_bytes(packed[:cut])
    (f,) = expand_inputs([str(tmp_path / "t.jsonl.gz")])
    got, message = _read_all(f)
    assert data.startswith(got) and len(got) > len(data) // 2
    # zlib holds back at most a few KB it cannot finish decoding yet
    assert len(data) * 2 // 3 - len(got) < 64 * 1024
    assert message == (
        f"gzip stream truncated after {cut} bytes ({len(got)} bytes uncompressed): "
        "the file was cut short (an interrupted copy or write?)"
    )


def test_random_bytes_named_gz_is_not_a_gzip_file(tmp_path):
    (tmp_path / "r.jsonl.gz").write_bytes(b"\x00\x01garbage" + bytes(range(256)))
    (f,) = expand_inputs([str(tmp_path / "r.jsonl.gz")])
    got, message = _read_all(f)
    assert got == b""
    assert message.startswith("not a gzip file (it starts with 00 01 67 61")


def test_corrupt_gzip_data_names_where(tmp_path):
    data = LINE * 20000
    packed = bytearray(gzip.compress(data))
    packed[len(packed) // 2 : len(packed) // 2 + 16] = b"\xff" * 16
    (tmp_path / "c.jsonl.gz").write_bytes(bytes(packed))
    (f,) = expand_inputs([str(tmp_path / "c.jsonl.gz")])
    got, message = _read_all(f)
    # deflate cannot tell corrupt bytes from data until they break its codes: what
    # came out before is kept (lines that do not parse are rejected one by one)
    assert 0 < len(got) < len(data)
    assert message.startswith("corrupt gzip data at compressed byte "), message
