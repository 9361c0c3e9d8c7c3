#!/usr/bin/env python3
"""Where gymray's SFT time goes, stage by stage, in one process and without Ray.

    python benchmarks/bench_stages.py CORPUS_DIR [--block-bytes N] [--files K]

Runs the same functions Ray runs (``gymray.pipeline.read_lines`` ->
``process_lines`` -> ``gymray.writer.DatasetSink.consume``) one after the
other over the corpus and times each, then times an instrumented mirror of
``process_lines``' loop to split it further (Arrow -> Python, parse_line,
sft_record, hashes, OutcomeBuilder rows, Arrow table). Compare the sum with
bench_sft.py's baseline seconds: the difference is what gymray's design costs
before any Ray overhead; gymray's wall time minus (this sum / cores) is Ray's.

Uses package internals, so it follows the package: if a signature changes,
this script needs the same change.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, wall: float, cpu_s: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu_s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--block-bytes", type=int, default=None)
    ap.add_argument("--files", type=int, default=0, help="only the first K files (0: all)")
    ap.add_argument(
        "--what-if", action="store_true", help="also time the alternatives behind the suggestions"
    )
    a = ap.parse_args()

    import inspect

    import _common as C
    import orjson
    import pyarrow as pa
    from gymray.pipeline import OutcomeBuilder, process_lines, read_lines
    from gymray.writer import DatasetSink

    from gymray.config import load_settings
    from gymray.recipes.sft import sft_record
    from gymray.rollouts import Reject, parse_line, unit_interval
    from gymray.storage import Staging, expand_inputs

    out = tempfile.mkdtemp(prefix="gymray-stages-")
    overrides = {"input": [str(a.corpus)], "output": os.path.join(out, "ds")}
    if a.block_bytes:
        overrides["ray"] = {"block_bytes": a.block_bytes}
    settings = load_settings("sft", overrides)
    inputs = expand_inputs(settings.input)
    if a.files:
        inputs = inputs[: a.files]
    files = [f.uri for f in inputs]
    nbytes = sum(f.size for f in inputs)
    clk = Clock()

    # 1-3 streamed block by block, as a worker and the driver see them (holding
    # every block at once would time page faults, not the stages)
    staging = Staging(settings.output, settings.storage, overwrite=True)
    sink = DatasetSink(
        staging, "openai", files, val_fraction=settings.split.val_fraction, dedup=True
    )
    lines = nblocks = outcome_bytes = 0
    P = time.perf_counter
    for fid, f in enumerate(inputs):
        it = read_lines(f, fid, settings.ray.block_bytes, settings.storage)
        while True:
            t, c = P(), cpu()
            b = next(it, None)
            clk.add("1 read_lines (read + split + Arrow lines table)", P() - t, cpu() - c)
            if b is None:
                break
            lines += b.num_rows
            nblocks += 1
            t, c = P(), cpu()
            o = process_lines(b, settings, files)
            clk.add("2 process_lines (worker: parse + recipe + outcome table)", P() - t, cpu() - c)
            outcome_bytes += o.nbytes
            t, c = P(), cpu()
            sink.consume(o)
            clk.add("3 DatasetSink.consume + finish (driver: JSONL + Parquet)", P() - t, cpu() - c)
    t, c = P(), cpu()
    done = sink.finish()
    clk.add("3 DatasetSink.consume + finish (driver: JSONL + Parquet)", P() - t, cpu() - c)
    staging.abort()

    # 4. process_lines split further (a mirror of its loop, timed piece by piece)
    names = [os.path.basename(f) for f in files]
    sft, chat, seed = settings.sft, settings.chat, settings.split.seed
    takes_hashes = "content_hash" in inspect.signature(OutcomeBuilder.add).parameters
    content_key = C.dedup_key()
    if takes_hashes:
        from gymray.pipeline import record_hashes
    blocks = (
        b for fid, f in enumerate(inputs) for b in read_lines(f, fid, settings.ray.block_bytes)
    )
    for b in blocks:
        t0, c0 = P(), cpu()
        file_ids = b.column("file_id").to_pylist()
        line_nos = b.column("line").to_pylist()
        raws = b.column("raw").to_pylist()
        clk.add("4a Arrow -> Python (to_pylist of raw)", P() - t0, cpu() - c0)
        builder = OutcomeBuilder(sft.format)
        for file_id, line, raw in zip(file_ids, line_nos, raws, strict=True):
            t0, c0 = P(), cpu()
            r = parse_line(raw, names[file_id], chat.reasoning)
            t1 = P()
            clk.wall["4b parse_line (orjson.loads + conversion)"] = (
                clk.wall.get("4b parse_line (orjson.loads + conversion)", 0) + t1 - t0
            )
            if isinstance(r, Reject):
                builder.add(file_id, line, "rejected", reason=r.reason, raw=raw)
                continue
            record, reason = sft_record(r, (files[file_id], line), sft, chat)
            t2 = P()
            clk.wall["4c sft_record"] = clk.wall.get("4c sft_record", 0) + t2 - t1
            if record is None:
                builder.add(
                    file_id, line, "filtered", reason=reason, reward=r.reward, task_key=r.task_key
                )
                clk.wall["4e OutcomeBuilder.add"] = (
                    clk.wall.get("4e OutcomeBuilder.add", 0) + P() - t2
                )
                continue
            # hashes: older gymray took them from the caller, newer computes them in add()
            extra = {}
            if takes_hashes:
                extra["tools_hash"], extra["content_hash"] = record_hashes(record, r.tools, seed)
            else:
                content_key(record, r.tools)  # timed here; add() computes it again
            u = unit_interval(r.task_key, seed)
            t3 = P()
            clk.wall["4d content hash + unit_interval"] = (
                clk.wall.get("4d content hash + unit_interval", 0) + t3 - t2
            )
            builder.add(
                file_id,
                line,
                "used",
                reward=r.reward,
                task_key=r.task_key,
                record=record,
                split_u=u,
                **extra,
            )
            clk.wall["4e OutcomeBuilder.add"] = clk.wall.get("4e OutcomeBuilder.add", 0) + P() - t3
        t0, c0 = P(), cpu()
        builder.table()
        clk.add("4f OutcomeBuilder.table (Python -> Arrow)", P() - t0, cpu() - c0)

    # 5. the baseline's read for comparison: whole file, split
    t, c = time.perf_counter(), cpu()
    n = 0
    for f in inputs:
        with open(f.path, "rb") as fh:
            n += len(fh.read().split(b"\n"))
    clk.add("5 (baseline) open().read().split(b'\\n')", time.perf_counter() - t, cpu() - c)
    t, c = time.perf_counter(), cpu()
    for f in inputs:
        with open(f.path, "rb") as fh:
            for raw in fh.read().split(b"\n"):
                if raw:
                    orjson.loads(raw)
    clk.add(
        "6 (reference) read + split + orjson.loads of every line",
        time.perf_counter() - t,
        cpu() - c,
    )

    # 7. what-ifs behind the suggestions (not gymray code; same inputs)
    if a.what_if:
        import numpy as np
        import pyarrow.fs as pafs

        fs = pafs.LocalFileSystem()
        bb = settings.ray.block_bytes
        t, c = P(), cpu()
        nlines = 0
        for f in inputs:
            # Arrow lines block without a Python bytes object per line: newline
            # offsets by numpy, values keep their "\n" (orjson accepts it).
            with fs.open_input_stream(f.path) as stream:
                carry = b""
                while True:
                    chunk = stream.read(bb)
                    if not chunk and not carry:
                        break
                    data = carry + chunk if carry else chunk
                    cut = data.rfind(b"\n") + 1 if chunk else len(data)
                    if cut <= 0:
                        carry = data
                        continue
                    view = np.frombuffer(data, dtype=np.uint8, count=cut)
                    ends = np.flatnonzero(view == 10) + 1
                    if not chunk and (len(ends) == 0 or ends[-1] != cut):
                        ends = np.append(ends, cut)
                    offsets = np.concatenate([[0], ends]).astype(np.int64)
                    arr = pa.LargeBinaryArray.from_buffers(
                        pa.large_binary(),
                        len(ends),
                        [None, pa.py_buffer(offsets), pa.py_buffer(data)],
                    )
                    nlines += len(arr)
                    carry = data[cut:]
                    if not chunk:
                        break
        clk.add(
            "7a what-if: read with numpy newline offsets, no per-line bytes", P() - t, cpu() - c
        )
        thr = sft.reward_threshold
        t, c = P(), cpu()
        for fid, f in enumerate(inputs):
            with open(f.path, "rb") as fh:
                for n, raw in enumerate(fh.read().split(b"\n"), 1):
                    if not raw:
                        continue
                    obj = orjson.loads(raw)
                    rw = obj.get("reward") if isinstance(obj, dict) else None
                    if thr is not None and isinstance(rw, (int, float)) and rw < thr:
                        continue  # filtered: below_reward_threshold, no conversion
                    r = parse_line(
                        raw, names[fid], chat.reasoning
                    )  # (parses again: an upper bound)
                    if not isinstance(r, Reject):
                        sft_record(r, (files[fid], n), sft, chat)
        clk.add(
            "7b what-if: baseline loop with the reward filter before conversion", P() - t, cpu() - c
        )
        t, c = P(), cpu()
        for fid, f in enumerate(inputs):
            with open(f.path, "rb") as fh:
                for n, raw in enumerate(fh.read().split(b"\n"), 1):
                    if not raw:
                        continue
                    r = parse_line(raw, names[fid], chat.reasoning)
                    if not isinstance(r, Reject):
                        sft_record(r, (files[fid], n), sft, chat)
        clk.add("7c (for 7b) the same loop without it", P() - t, cpu() - c)

    summary = {
        "corpus": str(a.corpus),
        "files": len(inputs),
        "lines": lines,
        "bytes": nbytes,
        "block_bytes": settings.ray.block_bytes,
        "blocks": nblocks,
        "mean_block_rows": round(lines / max(1, nblocks), 1),
        "outcome_bytes": outcome_bytes,
        "records": done["counts"]["records"],
        "seconds": {k: round(v, 2) for k, v in sorted(clk.wall.items())},
        "cpu_seconds": {k: round(v, 2) for k, v in sorted(clk.cpu.items())},
        "pa_version": pa.__version__,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
