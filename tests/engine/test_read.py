"""Reading rollout files: broken files end in one reject, and the run goes on."""

from __future__ import annotations

import gzip
import os
import random
import zlib
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

import gymray
from gymray.engine.read import (
    chunk_summary,
    chunks_of,
    plan_units,
    range_starts,
    read_lines,
    sample_lines,
)
from gymray.samples.generate import message, rollout, user, write_jsonl
from gymray.storage import InputFile, StorageError, expand_inputs


def rows(task: int, n: int = 2, pad: int = 0) -> list[dict]:
    """``n`` rollouts of one task, rewards 1.0, 0.0, ... (so DPO pairs them)."""
    return [
        rollout([user(f"question {task}")], [message(f"answer {task}.{k} " + "x" * pad, "m")],
                1.0 if k % 2 == 0 else 0.0, agent="a", task=task, rollout_index=k)
        for k in range(n)
    ]  # fmt: skip


def gz_cut(path: Path, data: bytes, keep: float) -> tuple[bytes, bytes]:
    """Write ``data`` gzipped and cut to ``keep`` of its size; return (what the cut
    stream decodes to, the file's bytes), the first by zlib on its own."""
    packed = gzip.compress(data)[: int(len(gzip.compress(data)) * keep)]
    path.write_bytes(packed)
    return zlib.decompressobj(wbits=31).decompress(packed), packed


def lines_of(f: InputFile, block_bytes: int = 1024, **kw) -> pa.Table:
    return pa.concat_tables(read_lines(f, 0, block_bytes, **kw))


@pytest.fixture
def cut_file(tmp_path):
    data = b"".join(orjson.dumps(r) + b"\n" for t in range(60) for r in rows(t, pad=500))
    decoded, _ = gz_cut(tmp_path / "cut.jsonl.gz", data, 0.6)
    (f,) = expand_inputs([str(tmp_path / "cut.jsonl.gz")])
    return f, data, decoded


# --------------------------------------------------------------------------- read_lines
@pytest.mark.parametrize("block_bytes", [1024, 1 << 20])
def test_a_truncated_gz_gives_its_lines_then_one_break_row(cut_file, block_bytes):
    f, data, decoded = cut_file
    complete = decoded.count(b"\n")
    assert 0 < complete < data.count(b"\n")
    t = lines_of(f, block_bytes)
    assert t.column("line").to_pylist() == list(range(1, complete + 2))
    assert (
        t.column("raw").to_pylist()[:complete] == [x + b"\n" for x in data.split(b"\n")][:complete]
    )
    *good, last = t.to_pylist()
    assert all(r["error"] is None for r in good)
    assert last["raw"] == decoded[decoded.rindex(b"\n") + 1 :]  # the partial line
    assert last["offset"] == decoded.rindex(b"\n") + 1
    assert last["error"].startswith(f"gzip stream truncated after {f.size} bytes")


def test_random_bytes_named_gz_are_one_break_row_at_line_1(tmp_path):
    (tmp_path / "r.jsonl.gz").write_bytes(random.Random(0).randbytes(5000))
    (f,) = expand_inputs([str(tmp_path / "r.jsonl.gz")])
    (row,) = lines_of(f).to_pylist()
    assert (row["line"], row["offset"], row["raw"]) == (1, 0, b"")
    assert row["error"].startswith("not a gzip file (it starts with ")


def test_sampling_for_format_detection_reads_around_broken_files(tmp_path, cut_file):
    f, data, decoded = cut_file
    (tmp_path / "r.jsonl.gz").write_bytes(b"not gzip at all")
    good = write_jsonl(tmp_path / "good.jsonl", rows(0))
    inputs = expand_inputs([str(tmp_path / "r.jsonl.gz"), f.uri, str(good)])
    sample = list(sample_lines(inputs))
    assert sample[:50] == decoded.split(b"\n")[:50]
    assert sample[50:] == good.read_bytes().split(b"\n")


def test_planning_survives_a_file_gone_since_it_was_listed(tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", [r for t in range(30) for r in rows(t)])
    (f,) = expand_inputs([str(big)])
    assert len(plan_units([f], 4096)) > 1
    os.remove(big)
    assert plan_units([f], 4096) == [(0, None)]
    # the storage failing is not the file being broken: the run stops, saying so
    with pytest.raises(StorageError, match=f"cannot read input {big}: "):
        list(read_lines(f, 0, 1024))


# --------------------------------------------------------------------------- end to end
@pytest.fixture
def hostile(tmp_path):
    """A directory with a good file holding hostile lines, a truncated .gz and
    random bytes named .gz."""
    d = tmp_path / "in"
    d.mkdir()
    good = [orjson.dumps(r) for t in range(100, 110) for r in rows(t)]

    def nest(task: int, x: bytes) -> bytes:
        return orjson.dumps(rows(task)[0]).replace(b'"reward"', b'"x": ' + x + b', "reward"')

    deep = nest(200, b"[" * 5000 + b"]" * 5000)  # past orjson's reader
    bad_utf8 = orjson.dumps(rows(201)[0]).replace(b"question", b"qu\xffstion")
    deep_300 = nest(202, b"[" * 300 + b"]" * 300)  # orjson reads it, cannot write it
    wide = nest(203, b"[" + b"[[{}]]," * 400 + b"[]]")  # 1,600 brackets, 4 deep: used
    lines = good[:5] + [deep, bad_utf8, deep_300, wide] + good[5:]
    (d / "good.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    data = b"".join(orjson.dumps(r) + b"\n" for t in range(40) for r in rows(t, pad=800))
    decoded, _ = gz_cut(d / "cut.jsonl.gz", data, 0.5)
    (d / "random.jsonl.gz").write_bytes(random.Random(1).randbytes(3000))
    return d, decoded


def check_broken_files_rejected(out: Path, d: Path, decoded: bytes, counts: dict) -> None:
    complete = decoded.count(b"\n")
    assert counts["input_lines"] == 24 + complete + 1 + 1
    assert counts["input_lines"] == counts["used"] + sum(counts["filtered"].values()) + sum(
        counts["rejected"].values()
    )
    assert counts["rejected"] == {"unreadable_file": 2, "too_deeply_nested": 2, "invalid_utf8": 1}
    rejects: dict[str, list] = {}
    for r in map(orjson.loads, (out / "rejects.jsonl").read_bytes().splitlines()):
        rejects.setdefault(Path(r["file"]).name, []).append(r)
    (cut,) = rejects["cut.jsonl.gz"]
    assert (cut["line"], cut["reason"]) == (complete + 1, "unreadable_file")
    assert cut["detail"].startswith("the rest of the file cannot be read: gzip stream truncated")
    assert cut["raw"] == decoded[decoded.rindex(b"\n") + 1 :].decode()
    (rand,) = rejects["random.jsonl.gz"]
    assert (rand["line"], rand["reason"], rand["raw"]) == (1, "unreadable_file", "")
    assert "not a gzip file" in rand["detail"]
    assert [(r["line"], r["reason"]) for r in rejects["good.jsonl"]] == [
        (6, "too_deeply_nested"),
        (7, "invalid_utf8"),
        (8, "too_deeply_nested"),
    ]
    m = orjson.loads((out / "manifest.json").read_bytes())
    per_file = {Path(k).name: v for k, v in m["per_file"].items()}
    assert per_file["cut.jsonl.gz"]["lines"] == complete + 1
    assert per_file["cut.jsonl.gz"]["rejected"] == 1  # every line before the cut is read
    assert "unreadable_file" in (out / "report.md").read_text()


@pytest.mark.usefixtures("ray_session")
def test_sft_rejects_broken_files_and_uses_the_rest(hostile, tmp_path):
    d, decoded = hostile
    out = tmp_path / "sft"
    result = gymray.prepare("sft", input=str(d), output=str(out), **{"ray.block_bytes": 4096})
    check_broken_files_rejected(out, d, decoded, result.counts)
    # the rollouts with reward 1.0: every other line, and the wide line
    assert result.counts["used"] == 11 + (decoded.count(b"\n") + 1) // 2


@pytest.mark.usefixtures("ray_session")
def test_dpo_rejects_broken_files_alike_from_scratch_copies_or_not(hostile, tmp_path):
    """Grouped recipes: shuffling whole rollouts, or keys with lines read back from
    scratch copies (split in ranges) give the same outputs, broken files and all."""
    d, decoded = hostile
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    packed = gymray.prepare("dpo", input=str(d), output=str(tmp_path / "z"))
    copied = gymray.prepare(
        "dpo", input=str(d), output=str(tmp_path / "c"),
        **{"ray.scratch": str(scratch), "ray.split_bytes": 4096, "ray.block_bytes": 4096},
    )  # fmt: skip
    assert packed.manifest["stats"]["shuffle"] == "rollouts"
    assert copied.manifest["stats"]["shuffle"] == "keys"
    assert list(scratch.iterdir()) == []
    check_broken_files_rejected(tmp_path / "z", d, decoded, packed.counts)
    assert packed.counts == copied.counts
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl", "filtered.jsonl"):
        assert (tmp_path / "z" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name


@pytest.mark.parametrize("seed", range(6))
def test_a_chunk_summary_of_megabytes_counts_as_python_does(tmp_path, seed):
    """Chunks larger than the summary's read pieces (64 KiB to its first newline,
    then a 1 MiB buffer read into again): the counts, the first newline and the
    last byte are those of the bytes themselves, for lines longer than a piece too."""
    rng = random.Random(seed)
    sizes = [rng.choice([10, 3000, 70_000, 300_000]) for _ in range(rng.randint(5, 25))]
    data = b"\n".join(bytes([97 + i % 26]) * n for i, n in enumerate(sizes))
    data += b"\n" if seed % 2 else b""
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    (f,) = expand_inputs([str(path)])
    for split in (65_536, 100_000, 1_500_000, 3_000_001):
        for start, count in chunks_of(len(data), split):
            piece = data[start : start + split]
            first = piece.find(b"\n")
            want = (
                (piece.count(b"\n"), first, piece.endswith(b"\n"), len(piece))
                if count or first < 0
                else (0, first, False, split)
            )
            assert chunk_summary(f, start, split, None, count) == want, (split, start)


@pytest.mark.parametrize("seed", range(20))
def test_chunk_summaries_cut_ranges_at_line_starts_with_true_line_numbers(tmp_path, seed):
    """Ranges planned from per-chunk summaries start at line starts and know how many
    lines precede them, whatever the chunk size and wherever the newlines fall
    (lines longer than a chunk, a newline on a boundary, no final newline)."""
    rng = random.Random(seed)
    lines = [b"x" * rng.choice([0, 1, 5, 63, 64, 65, 200]) for _ in range(rng.randint(1, 60))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    (f,) = expand_inputs([str(path)])
    split = rng.choice([16, 64, 65, 100])
    # as plan_units summarizes: every chunk counted but the last
    summaries = [
        chunk_summary(f, s, split, None, count) for s, count in chunks_of(len(data), split)
    ]
    starts, before = range_starts(summaries, len(data))
    line_starts = [0] + [i + 1 for i, b in enumerate(data) if b == 10 and i + 1 < len(data)]
    assert set(starts) <= set(line_starts) | {len(data)}
    assert starts == sorted(starts) and starts[0] == 0
    for s, n in zip(starts, before, strict=True):
        assert data[:s].count(b"\n") == n  # the true number of the range's first line
    # every chunk boundary is followed by a range start at the next line start
    for b in range(split, len(data), split):
        nxt = min((x for x in line_starts if x >= b), default=None)
        assert nxt is None or nxt in starts


def test_a_gz_input_counts_its_lines_not_its_bytes_on_disk_in_grouping_ranges(tmp_path):
    """A grouping range holds ~64 MiB of rollout lines: a .gz counts GZIP_RATIO times
    its size, so a range of compressed input is not 6x a range of plain input."""
    from gymray.config import Settings
    from gymray.engine.read import GZIP_RATIO, partitions_for

    settings = Settings(algo="dpo")
    size = 200 << 20
    plain = [InputFile("a.jsonl", "a.jsonl", size, 0)]
    packed = [InputFile("a.jsonl.gz", "a.jsonl.gz", size, 0)]
    assert partitions_for(plain, settings) == 4
    assert partitions_for(packed, settings) == -(-size * GZIP_RATIO // (64 << 20)) == 19
    assert partitions_for(packed, Settings(algo="dpo", ray={"partitions": 3})) == 3


def test_keyed_grouping_sizes_ranges_by_lines_and_keeps_sort_pieces_large(tmp_path):
    """Grouping by keys cuts ranges of ~KEYED_RANGE_LINES lines, however long the lines
    (by bytes, a corpus of 18 KB rollouts got 5x more ranges than one of 3.7 KB rollouts
    of the same size, each of fewer lines), and gives each split task so many parsed
    blocks that a piece of the sort holds PIECE_LINES keys or more: smaller pieces are
    returned inline to the driver, and a 2,000-range run of DPO 250k cost the driver
    15.5 CPU-s and 705 MiB, against 1.3 CPU-s and 288 MiB with 14 ranges."""
    from gymray.config import Settings
    from gymray.engine.read import KEYED_RANGE_LINES, PIECE_LINES, sort_layout

    settings = Settings(algo="dpo")
    block = settings.ray.block_bytes
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"x" * 99 + b"\n")
    long = tmp_path / "long.jsonl"
    long.write_bytes(b"x" * 9999 + b"\n")
    # the files stand for 1 GB of such lines (128 blocks): the probe reads their first MiB
    size = 1 << 30
    ranges = {}
    for path, line_bytes in ((short, 100), (long, 10_000)):
        files = [InputFile(str(path), str(path), size, 0)]
        lines = size / line_bytes
        r, per_split = sort_layout(files, settings, size >> 28, keyed=True)
        assert r == -(-lines // KEYED_RANGE_LINES)
        assert per_split == 32  # a parse task's blocks: as many splits as parse tasks
        r, per_split = sort_layout(files, settings, 4096, keyed=True)  # more tasks than blocks
        assert per_split * block / line_bytes / r >= PIECE_LINES  # keys a piece
        assert (per_split - 1) * block / line_bytes / r < PIECE_LINES  # and no more blocks
        ranges[line_bytes] = r
    # 10.7M and 107k lines; by bytes both would get 16 ranges (64 MiB each)
    assert ranges == {100: 537, 10_000: 6}
    files = [InputFile(str(short), str(short), size, 0)]
    assert sort_layout(files, settings, 4096, keyed=True) == (537, 7)  # 1,093 keys a piece
    # 7 tasks: a split task takes 19 blocks, 7 splits
    assert sort_layout(files, Settings(algo="dpo", ray={"partitions": 3}), 7, keyed=True) == (3, 19)
    # a file gone since it was listed is left out of the estimate (its reader says so)
    gone = InputFile(str(tmp_path / "gone.jsonl"), str(tmp_path / "gone.jsonl"), size, 0)
    # (2 GiB of 100-byte lines: 1,074 ranges, capped at 1,024)
    assert sort_layout([gone, *files], settings, 8, keyed=True)[0] == 1024


def test_whole_rollout_grouping_gives_split_tasks_large_pieces_and_bounded_work():
    """1,000 .gz files of 1 MiB (6 GiB of lines, a block each): 94 ranges of ~64 MiB; one
    piece per file and range would be ~67 KB of lines, so a split task takes 8 files'
    blocks, and each piece holds PIECE_BYTES of lines or more. One large .gz is one parse
    task, and a split task that took all its blocks held all its rollouts (320-391 MiB
    for 470 MB): a split task now takes SPLIT_BLOCKS blocks at most."""
    from gymray.config import Settings
    from gymray.engine import read
    from gymray.engine.read import partitions_for, sort_layout

    settings = Settings(algo="dpo")
    files = [InputFile(f"f{i}.jsonl.gz", f"f{i}.jsonl.gz", 1 << 20, 0) for i in range(1000)]
    ranges, per_split = sort_layout(files, settings, len(files), keyed=False)
    assert ranges == partitions_for(files, settings) == 94 and per_split == 8
    assert per_split * (1 << 20) * read.GZIP_RATIO / ranges >= read.PIECE_BYTES
    one = [InputFile("a.jsonl.gz", "a.jsonl.gz", 470_000_000, 0)]  # 2.8 GB of lines
    ranges, per_split = sort_layout(one, settings, 1, keyed=False)
    assert (ranges, per_split) == (43, read.SPLIT_BLOCKS)  # 64 MiB of lines
    # with smaller blocks, what a piece needs (22 MiB); with many ranges, too (500 MiB)
    small = Settings(algo="dpo", ray={"block_bytes": 1 << 20})
    assert sort_layout(one, small, 1, keyed=False) == (43, 22)
    many = Settings(algo="dpo", ray={"partitions": 1000})
    assert sort_layout(one, many, 1, keyed=False) == (1000, 63)
