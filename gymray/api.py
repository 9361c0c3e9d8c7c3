"""The Python API: ``prepare`` (and, with the launch side, ``submit`` / ``run``).

Works from a notebook connected with ``ray.init(address=...)``, from a Ray Job,
or with no Ray at all (gymray then starts a local one).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
from omegaconf import OmegaConf

import gymray
from gymray.config import Settings, load_settings
from gymray.report import render, reward_summary
from gymray.storage import (
    MANIFEST,
    Staging,
    StorageError,
    expand_inputs,
    filesystem,
    is_remote,
    join,
    output_state,
    read_manifest,
)

log = logging.getLogger("gymray")

FORMAT_OF = {
    "sft": lambda s: s.sft.format,
    "dpo": lambda s: s.dpo.format,
    "grpo": lambda s: s.grpo.format,
}


@dataclass
class PrepareResult:
    """What ``prepare`` wrote: paths, counts, the manifest, and the records as a Ray Dataset."""

    output: str
    manifest: dict
    reused: bool
    paths: dict = field(default_factory=dict)
    storage: Any = field(default=None, repr=False)
    settings: Settings | None = field(default=None, repr=False)

    @property
    def counts(self) -> dict:
        return self.manifest["counts"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def dataset(self, split: str = "train"):
        """The written records of ``split`` as a Ray Dataset (read from the Parquet files)."""
        import ray.data

        fs, base = filesystem(self.output, self.storage)
        files = [f"{base}/{p}" for p in self.manifest["files"]["parquet"][split]]
        return ray.data.read_parquet(files, filesystem=fs)

    def summary(self) -> dict:
        return {
            "output": self.output,
            "reused": self.reused,
            "fingerprint": self.fingerprint,
            "paths": self.paths,
            "counts": self.counts,
        }


def ensure_ray(settings: Settings | None = None) -> None:
    """Use the Ray this process is connected to, the one at ``ray.address`` /
    ``RAY_ADDRESS``, or start a small local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rs = settings.ray if settings else None
    address = (rs.address if rs else None) or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    # A Ray of our own, not whatever cluster happens to run on this host.
    kwargs: dict[str, Any] = {
        "address": "local",
        "include_dashboard": False,
        "log_to_driver": False,
    }
    if rs and rs.num_cpus:
        kwargs["num_cpus"] = rs.num_cpus
    if rs and rs.object_store_memory:
        kwargs["object_store_memory"] = rs.object_store_memory
    ray.init(**kwargs)


def _fingerprint(settings: Settings, inputs: list, tasks: list) -> str:
    body = {
        "inputs": [f.key() for f in inputs],
        "tasks": [f.key() for f in tasks],
        "settings": settings.fingerprint_settings(),
        "gymray": gymray.__version__,
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _check_output(settings: Settings, fingerprint: str) -> dict | None:
    """The manifest to reuse, or None to (re)build; refuses to clobber by accident."""
    existing = read_manifest(settings.output, settings.storage)
    if existing is not None:
        if existing.get("fingerprint") == fingerprint and not settings.overwrite:
            return existing
        if not settings.overwrite:
            if not existing.get("fingerprint"):
                raise StorageError(
                    f"{settings.output} holds a {MANIFEST} gymray cannot read; "
                    "set overwrite=true to replace it, or choose another output"
                )
            raise StorageError(
                f"{settings.output} holds a dataset built from other inputs or settings "
                f"(fingerprint {existing.get('fingerprint')} != {fingerprint}); "
                "set overwrite=true to replace it, or choose another output"
            )
    else:
        # Local and object stores alike: a prefix without a manifest is not a dataset,
        # but only gymray's own unfinished writes are replaced without overwrite=true.
        state = output_state(settings.output, settings.storage)
        if state == "other" and not settings.overwrite:
            raise StorageError(
                f"{settings.output} exists and is not a gymray dataset (no {MANIFEST}); "
                "choose another output or set overwrite=true"
            )
        if state == "unfinished":
            log.info(
                "%s holds the leftovers of an unfinished gymray run (no %s): replacing them",
                settings.output,
                MANIFEST,
            )
    return None


def prepare(
    algo: str | None = None,
    *,
    settings: Settings | None = None,
    config_files: list[str] | None = None,
    **overrides: Any,
) -> PrepareResult:
    """Read rollouts, build ``algo`` records, write the dataset directory.

    Example::

        import gymray
        result = gymray.prepare("sft", input="rollouts/", output="/shared/ds/sft",
                                sft={"reward_threshold": 0.8})
        result.counts["records"]      # {'train': ..., 'val': ...}
        result.dataset("train").take(1)

    Keyword arguments are settings (``input``, ``output``, ``sft={...}``, ...),
    or dotted keys in a dict: ``**{"sft.format": "simple"}``.
    """
    if settings is None:
        if algo is None:
            raise TypeError("prepare() needs an algorithm ('grpo', 'sft' or 'dpo') or settings")
        settings = load_settings(algo, kwargs_overrides(overrides), config_files)
    inputs = expand_inputs(settings.input, settings.storage)
    tasks = expand_inputs(settings.tasks, settings.storage) if settings.tasks else []
    fingerprint = _fingerprint(settings, inputs, tasks)
    existing = _check_output(settings, fingerprint)
    if existing is not None:
        log.info(
            "reusing %s: same inputs and settings (fingerprint %s)", settings.output, fingerprint
        )
        # The dataset may have been moved since it was written: trust where it is now.
        existing["output"] = _resolved(settings.output)
        return PrepareResult(
            output=existing["output"],
            manifest=existing,
            reused=True,
            paths=_paths(existing),
            storage=settings.storage,
            settings=settings,
        )
    ensure_ray(settings)
    return _build(settings, inputs, tasks, fingerprint)


def kwargs_overrides(overrides: dict[str, Any]) -> dict:
    """Keyword settings as one override layer: ``sft={"format": "simple"}`` and
    ``**{"sft.reward_threshold": 0.8}`` merge key by key, values kept as given
    (not re-parsed from strings)."""
    layers = []
    for key, value in overrides.items():
        node: Any = value
        for part in reversed(key.split(".")):
            node = {part: node}
        layers.append(OmegaConf.create(node))
    return OmegaConf.to_container(OmegaConf.merge(*layers)) if layers else {}


def _build(settings: Settings, inputs: list, tasks: list, fingerprint: str) -> PrepareResult:
    import ray

    from gymray.pipeline import run_pipeline

    fmt = FORMAT_OF[settings.algo](settings)
    output = _resolved(settings.output)
    staging = Staging(output, settings.storage, overwrite=settings.overwrite)
    try:
        out = run_pipeline(settings, inputs, tasks, staging)
        out.pop("per_task", None)
        fmt = out.get("format", fmt)
        counts = out["counts"]
        if not (
            counts["input_lines"]
            == counts["used"] + sum(counts["filtered"].values()) + sum(counts["rejected"].values())
        ):
            raise RuntimeError(f"internal error: counts do not reconcile: {counts}")
        warnings = list(out.get("warnings", []))
        val = "val.jsonl" if counts["records"]["val"] else None
        manifest = {
            "algo": settings.algo,
            "format": fmt,
            "output": output,
            "fingerprint": fingerprint,
            "inputs": [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in inputs],
            "tasks_files": [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in tasks],
            "settings": _redacted(settings.model_dump(mode="json")),
            "counts": counts,
            "tasks": out["tasks"],
            "tools_differ": out["tools_differ"],
            "files": {
                "train": "train.jsonl",
                "val": val,
                "parquet": out["parquet"],
                "rejects": "rejects.jsonl",
                "filtered": "filtered.jsonl",
                "report": "report.md",
            },
            "reward": reward_summary(out["rewards"]),
            "stats": out.get("stats", {}),
            "per_file": out["per_file"],
            "warnings": warnings,
            "versions": {
                "gymray": gymray.__version__,
                "ray": ray.__version__,
                "pyarrow": _version("pyarrow"),
                "omegaconf": _version("omegaconf"),
                "python": platform.python_version(),
            },
        }
        manifest["nemo_rl"] = _data_config(
            settings.algo,
            fmt,
            join(output, "train.jsonl"),
            join(output, val) if val else None,
            out["tools_differ"],
        )
        report = render(manifest, out["examples"], warnings, out.get("report_sections"))
        with staging.open("report.md") as f:
            f.write(report.encode())
        staging.commit(manifest)
    except BaseException:
        staging.abort()
        raise
    return PrepareResult(
        output=output,
        manifest=manifest,
        reused=False,
        paths=_paths(manifest),
        storage=settings.storage,
    )


def _resolved(output: str) -> str:
    return output if is_remote(output) else os.path.abspath(output)


def _data_config(
    algo: str, fmt: str, train: str, val: str | None, tools_differ: bool
) -> dict | None:
    try:
        from gymray.nemo_rl import data_config
    except ImportError:  # the launch side is optional for prepare
        return None
    return data_config(algo, fmt, train, val, tools_differ)


def _paths(manifest: dict) -> dict:
    out = manifest["output"]
    files = manifest["files"]
    paths = {k: join(out, v) for k, v in files.items() if isinstance(v, str)}
    paths["manifest"] = join(out, MANIFEST)
    paths["parquet"] = {s: [join(out, p) for p in ps] for s, ps in files["parquet"].items()}
    return paths


def _redacted(d: dict) -> dict:
    """Settings as recorded: env var values never leave the process."""
    job = d.get("job") or {}
    if isinstance(job.get("env_vars"), dict):
        job["env_vars"] = {k: "<redacted>" for k in job["env_vars"]}
    return d


def _version(mod: str) -> str:
    try:
        return sys.modules[mod].__version__ if mod in sys.modules else __import__(mod).__version__
    except Exception:
        return "unknown"


def submit(
    prepared: PrepareResult,
    *,
    job: dict | None = None,
    nemo_rl: dict | None = None,
    dry_run: bool = False,
):
    """Submit NeMo RL training for a prepared dataset as a Ray Job; returns a job handle.

    Example::

        ds = gymray.prepare("dpo", input="rollouts/", output="/shared/ds/dpo")
        job = gymray.submit(ds, job={"nemo_rl_dir": "/shared/nemo-rl"},
                            nemo_rl={"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})
        job.status(); job.logs(); job.wait(); job.stop()

    ``job`` holds ``job.*`` settings, ``nemo_rl`` the NeMo RL overrides. Rerunning the
    same step attaches to the existing job instead of training twice.
    """
    from gymray.launch import submit as _submit

    base = prepared.settings or load_settings(
        prepared.manifest["algo"], {"output": prepared.output}
    )
    settings = base.model_copy(
        update={"job": {**base.job, **(job or {})}, "nemo_rl": {**base.nemo_rl, **(nemo_rl or {})}}
    )
    if settings.job:
        load_settings(settings.algo, {"job": settings.job})  # the same key checks as the CLI
    return _submit(prepared, settings, dry_run=dry_run)


def run(
    algo: str,
    *,
    wait: bool = True,
    dry_run: bool = False,
    config_files: list[str] | None = None,
    **overrides: Any,
):
    """``prepare`` then ``submit`` (then wait for the job, by default); returns the job handle.

    Example::

        job = gymray.run("sft", input="rollouts/", output="/shared/ds/sft",
                         job={"nemo_rl_dir": "/shared/nemo-rl"}, **{"nemo_rl.policy.model_name": "Qwen/Qwen2.5-1.5B"})
        job.status()   # 'SUCCEEDED'
    """
    prepared = prepare(algo, config_files=config_files, **overrides)
    handle = submit(prepared, dry_run=dry_run)
    if wait and not dry_run:
        handle.wait(follow_logs=False)
    return handle
