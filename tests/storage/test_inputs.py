"""Input listing and opening on a real local file system: hostile trees and files."""

from __future__ import annotations

import os

from gymray.storage import expand_inputs

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
