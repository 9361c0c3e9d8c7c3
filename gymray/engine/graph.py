"""The Ray Data plan of a run, whatever the recipe.

Per-rollout recipes: read -> parse + recipe + write, fused in one task per block
(records never reach the object store). Grouped recipes: read -> parse into keys
(or canonical rollouts) -> hash shuffle on the task -> decide per task -> sort
(by task, then input position) -> build + write. Every path ends with workers
writing parts and returning their stats; the driver gets stats only.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from gymray.engine.blocks import (
    SORT_KEYS,
    Spec,
    build_block,
    decide_block,
    group_block,
    parse_rollouts,
    process_lines,
    summarize_lines,
)
from gymray.engine.read import (
    ScratchCopies,
    partitions_for,
    plan_units,
    read_lines,
    shuffle_mode,
)
from gymray.engine.write import FAILED, Target, write_block
from gymray.errors import RAY_LOST, AuthError, ClusterError, ConfigError, causes
from gymray.jobs.client import auth_token
from gymray.storage import InputFile

log = logging.getLogger("gymray")


@dataclass
class RunResult:
    parts: list  # PartStats, sorted by key (the dataset's order)
    shuffle: str | None  # what a grouped recipe shuffled: keys | rollouts
    seconds: float = 0.0  # of the Ray Data run


def ensure_ray(ray_settings: Any = None) -> None:
    """Use the Ray this process is connected to; else the one at ``ray.address`` /
    ``RAY_ADDRESS`` (``auto``: the cluster ``ray start`` runs on this machine); else
    start a small local one. A cluster that does not answer fails within
    ``ray.connect_timeout_s``, with one line naming its address."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rs = ray_settings
    address = (rs.address if rs else None) or os.environ.get("RAY_ADDRESS")
    timeout = rs.connect_timeout_s if rs else 60.0
    if address and address.startswith(("http://", "https://")):
        raise ConfigError(
            f"{address} is a Ray job API (dashboard) address; preparing needs the cluster "
            "itself: run gymray on the cluster (ray job submit --address "
            f"{address} -- python -m gymray.run ...), or set ray.address / RAY_ADDRESS to "
            "its GCS address (head:6379)"
        )
    if address == "auto":
        address = _running_here() or address
    if not address or address == "local":
        # A Ray of our own, not whatever cluster happens to run on this host.
        kwargs: dict[str, Any] = {"address": "local", "include_dashboard": False,
                                  "log_to_driver": False}  # fmt: skip
        if rs and rs.num_cpus:
            kwargs["num_cpus"] = rs.num_cpus
        if rs and rs.object_store_memory:
            kwargs["object_store_memory"] = rs.object_store_memory
        with _keep_sigterm():
            ray.init(**kwargs)
        return
    if address != "auto":
        _reachable(address, min(timeout, 10.0))
    if auth_token() and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"  # Ray's client sends the token only then
    log.info("using the Ray cluster at %s", address)
    _init_within(address, timeout)


@contextmanager
def _keep_sigterm():
    """ray.init() installs a SIGTERM handler that exits at once; the caller's (the CLI
    stops the run, cleans up, and exits 3) comes back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if saved is not None:
            signal.signal(signal.SIGTERM, saved)


def _running_here() -> str | None:
    """The GCS address of the cluster ``ray start`` runs on this machine, if it answers
    (else None, and Ray's own ``auto`` search says what it finds)."""
    try:
        found = ray._private.services.get_ray_address_from_environment(None, None)
    except Exception:  # several clusters, or none recorded: start our own
        return None
    if not found:
        return None
    try:
        _reachable(found, 2.0)
    except ClusterError:
        return None
    return found


def _reachable(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({e}): check ray.address / "
            "RAY_ADDRESS and that the head node is up"
        ) from None


def _init_within(address: str, timeout: float) -> None:
    """``ray.init(address)``, given up after ``timeout`` s (Ray itself retries forever)."""
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(address=address, log_to_driver=False)
        except BaseException as e:  # reported in the caller's thread
            failure.append(e)

    thread = threading.Thread(target=connect, daemon=True, name="gymray-ray-init")
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.2)  # short waits: a SIGTERM in the main thread is seen at once
    if thread.is_alive():
        raise ClusterError(
            f"the Ray cluster at {address} did not answer within {timeout:g} s "
            "(ray.connect_timeout_s): check that its head node is up"
        )
    if failure:
        e = failure[0]
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "auth" in text.lower() or "token" in text.lower():
            raise AuthError(
                f"the Ray cluster at {address} refused the connection ({text}): set "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token"
            ) from None
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {text}") from None


def _tune(ds: ray.data.Dataset, grouped: bool) -> None:
    """Tune this dataset's own context (never the user's global DataContext).

    Ray Data reserves CPUs per operator, and the shuffle aggregators (idle until
    the map side is done) hold a CPU share by default: on a small cluster that
    leaves one parse task running at a time. Measured on 2 cores: DPO 100k
    rollouts 8.3 s -> 6.0 s; SFT 1.4 GB 3.6 s -> 2.9 s."""
    ctx = ds.context
    tuned = {"op_resource_reservation_enabled": False}
    if grouped:
        tuned["hash_shuffle_operator_actor_num_cpus_override"] = 0.0
    for k, v in tuned.items():
        if hasattr(ctx, k):  # names differ across Ray releases
            setattr(ctx, k, v)


def run(spec: Spec, inputs: list[InputFile], target: Target, settings: Any) -> RunResult:
    """Run ``spec.recipe`` over ``inputs``; workers write parts under ``target``.

    A run that loses a Ray worker, actor or node Ray Data cannot recover by itself (a
    shuffle aggregator, a node taking its objects along) is run again, up to
    ``ray.retries`` times, its parts under new names; outputs are deterministic, so a
    retried run writes what a clean one would."""
    for attempt in range(settings.ray.retries + 1):
        try:
            return _run(spec, inputs, target, settings)
        except Exception as e:
            lost = next((x for x in causes(e) if type(x).__name__ in RAY_LOST), None)
            if lost is None or attempt == settings.ray.retries:
                raise
            log.warning(
                "a Ray worker or node was lost (%s): running the pipeline again (retry %d of %d)",
                type(lost).__name__, attempt + 1, settings.ray.retries,
            )  # fmt: skip
            target.attempt = attempt + 1
            target.prepare()
    raise AssertionError("unreachable")


def _run(spec: Spec, inputs: list[InputFile], target: Target, settings: Any) -> RunResult:
    recipe = spec.recipe
    grouped = recipe.grouped
    storage = settings.storage
    shuffle, copy = shuffle_mode(settings, inputs) if grouped else (None, False)
    copies = ScratchCopies(settings.ray.scratch, inputs, storage) if copy else None
    try:
        readable = copies.inputs if copies else inputs  # read from the copies from here on
        breaks = copies.breaks if copies else {}  # copies of broken inputs end at the break
        units = plan_units(readable, settings.ray.split_bytes, storage)
        block_bytes = settings.ray.block_bytes

        def read(batch: dict) -> Iterator[pa.Table]:
            for u in batch["unit"]:
                fid, span = units[int(u)]
                f = readable[fid]
                broken = breaks.get(fid) if span is None or span[1] >= f.size else None
                yield from read_lines(f, fid, block_bytes, storage, span, broken)

        write_args = {
            "target": target,
            "fmt_name": recipe.format,
            "files": spec.files,
            "val_fraction": settings.split.val_fraction,
            "dedup": recipe.dedup,
            "task_sorted": grouped,
        }
        ds = ray.data.from_items(
            [{"unit": i} for i in range(len(units))], override_num_blocks=max(1, len(units))
        )
        _tune(ds, grouped)
        ds = ds.map_batches(read, batch_size=1, batch_format="numpy")
        if not grouped:
            ds = ds.map_batches(
                _process_and_write, batch_size=None, batch_format="pyarrow",
                fn_kwargs={"spec": spec, "write_args": write_args},
            )  # fmt: skip
        else:
            keyed = shuffle == "keys"
            ds = ds.map_batches(
                summarize_lines if keyed else parse_rollouts, batch_size=None,
                batch_format="pyarrow", fn_kwargs={"spec": spec},
            )  # fmt: skip
            ds = ds.repartition(partitions_for(inputs, settings), keys=["task_hash"])
            ds = ds.map_batches(
                decide_block if keyed else group_block, batch_size=None, batch_format="pyarrow",
                fn_kwargs={"spec": spec},
            )  # fmt: skip
            # Deterministic order whatever the partitioning: by task, then input position.
            ds = ds.sort(SORT_KEYS)
            ds = ds.map_batches(
                _build_and_write if keyed else _write_only, batch_size=None,
                batch_format="pyarrow",
                fn_kwargs={"spec": spec, "inputs": readable, "write_args": write_args},
            )  # fmt: skip
        parts = []
        progress = Progress(settings.ray.progress_s, inputs)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            keys, stats = batch.column("key").to_pylist(), batch.column("stats").to_pylist()
            for key, raw in zip(keys, stats, strict=True):
                if key == FAILED:
                    raise pickle.loads(raw)  # a worker's GymrayError, as it raised it
                parts.append(pickle.loads(raw))
                progress.add(parts[-1])
    finally:
        if copies is not None:
            copies.remove()
    return RunResult(sorted(parts, key=lambda p: p.key), shuffle)


class Progress:
    """A line now and then while the parts come in, for logs that have no progress bar
    (a Ray Job's, a pipeline's): lines, MB read and MB/s, records, elapsed. Ray Data's
    own bars and logs are left as the user set them. Grouped recipes report once their
    records are built (the shuffle comes first), and without bytes read."""

    def __init__(self, every: float, inputs: list[InputFile]):
        self.every = every
        # the % of bytes read means something only when they are the files' own sizes
        compressed = any(f.uri.endswith(".gz") for f in inputs)
        self.total = None if compressed else sum(f.size for f in inputs)
        self.start = self.last = time.monotonic()
        self.lines = self.records = self.bytes = 0

    def add(self, stats: Any) -> None:
        self.lines += stats.lines
        self.records += len(stats.records.get("nbytes", ()))
        self.bytes += stats.input_bytes
        now = time.monotonic()
        if self.every and now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now - self.start))

    def line(self, seconds: float) -> str:
        read = ""
        if self.bytes:
            mb = self.bytes / 1e6
            share = f" of {self.total / 1e6:,.0f}" if self.total else ""
            read = f", {mb:,.0f}{share} MB read ({mb / max(seconds, 1e-3):,.0f} MB/s)"
        return f"progress: {self.lines:,} lines{read}, {self.records:,} records, {seconds:.0f} s"


def _process_and_write(batch: pa.Table, spec: Spec, write_args: dict) -> pa.Table:
    read = (pc.sum(pc.binary_length(batch.column("raw"))).as_py() or 0) + batch.num_rows
    return write_block(process_lines(batch, spec), input_bytes=read, **write_args)


def _build_and_write(batch: pa.Table, spec: Spec, inputs, write_args: dict) -> pa.Table:
    return write_block(build_block(batch, spec, inputs), **write_args)


def _write_only(batch: pa.Table, spec: Spec, inputs, write_args: dict) -> pa.Table:
    return write_block(batch, **write_args)
