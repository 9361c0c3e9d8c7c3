"""The Python API: ``prepare``, ``submit``, ``run``, ``load``.

Works from a notebook connected with ``ray.init(address=...)``, from a Ray Job,
or with no Ray at all (gymray then starts a local one).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ray.exceptions
from omegaconf import OmegaConf

from gymray import recipes
from gymray.cluster import ensure_ray
from gymray.config import SettingsBase, load_settings, with_job
from gymray.dataset.manifest import fingerprint, paths, reusable
from gymray.dataset.publish import publish
from gymray.dataset.result import PrepareResult
from gymray.engine.blocks import Spec
from gymray.engine.graph import run as run_graph
from gymray.engine.read import read_whole, sample_lines
from gymray.engine.write import Target
from gymray.errors import ConfigError, GymrayError, raise_if_stopped, write_error
from gymray.jobs.client import connect, parent_submission_id
from gymray.jobs.handle import JobHandle
from gymray.jobs.submit import submit_training
from gymray.nemo_rl import build
from gymray.recipes.base import Context
from gymray.rollouts import file_environment
from gymray.storage import (
    InputFile,
    Staging,
    StorageError,
    existing_file,
    expand_inputs,
    for_tasks,
    is_remote,
    local_dataset_path,
    read_manifest,
    refuse_overlap,
)

log = logging.getLogger("gymray")


def prepare(
    algo: str | None = None,
    *,
    settings: SettingsBase | None = None,
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
            raise TypeError(
                f"prepare() needs an algorithm ({', '.join(recipes.ALGOS)}) or settings"
            )
        settings = load_settings(algo, kwargs_overrides(overrides), config_files)
    check_output_path(settings.output)
    inputs = expand_inputs(settings.input, settings.storage)
    tasks, owners = _task_files(settings, inputs)
    refuse_overlap(settings.output, [f.uri for f in inputs], [f.uri for f in tasks])
    fp = fingerprint(settings, inputs, tasks)
    existing = reusable(settings, fp, inputs, tasks)
    if existing is not None:
        log.info("reusing %s: same inputs and settings (fingerprint %s)", settings.output, fp)
        return _result(existing, True, settings)
    ensure_ray(settings.ray)
    log.info("preparing %s records into %s", settings.algo, _resolved(settings.output))
    manifest, reused = _build(settings, inputs, tasks, owners, fp)
    if reused:
        log.info(
            "reusing %s: another run published it meanwhile (fingerprint %s)", settings.output, fp
        )
    return _result(manifest, reused, settings)


def _result(manifest: dict, reused: bool, settings: SettingsBase) -> PrepareResult:
    """The result of a prepare, its warnings logged as the CLI prints them."""
    if reused:  # the dataset may have been moved since it was written: trust where it is now
        manifest["output"] = _resolved(settings.output)
    for warning in manifest.get("warnings", []):
        log.warning("%s", warning)
    return PrepareResult(manifest["output"], manifest, reused, paths(manifest), settings)


def _task_files(settings: SettingsBase, inputs: list[InputFile]) -> tuple[list[InputFile], dict]:
    """The ``tasks=`` files, or those the recipe finds beside the rollouts files
    (with the rollouts file each belongs to)."""
    if settings.tasks:
        return expand_inputs(settings.tasks, settings.storage), {}
    found, owners = [], {}
    wanted = recipes.get(settings.algo).task_files(settings, [f.uri for f in inputs])
    for rollouts, candidates in wanted.items():
        for uri in candidates:
            f = existing_file(uri, settings.storage)
            if f is not None:
                found.append(f)
                owners[f.uri] = rollouts
                break
    return found, owners


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


def _build(
    settings: SettingsBase, inputs: list, tasks: list, owners: dict, fp: str
) -> tuple[dict, bool]:
    """Write the dataset; return its manifest, and whether it is an identical one
    another run published meanwhile (then this run's files are dropped)."""
    output = _resolved(settings.output)
    files = [f.uri for f in inputs]  # names in records, rejects and counts: the user's
    # Tasks get plain values: a Settings object unpickled in a worker imports gymray.config
    # (OmegaConf, every algorithm's models: 0.1 CPU-s and 75 modules a worker).
    storage = for_tasks(settings.storage)
    context = Context(
        files,
        sample=lambda: sample_lines(inputs, storage),
        tasks=read_whole(tasks, storage),
        task_owners=owners,
    )
    recipe = recipes.get(settings.algo)(settings, context)
    spec = Spec(recipe, files, [file_environment(u) for u in files], storage)
    staging = Staging(output, storage, overwrite=settings.overwrite, fingerprint=fp)
    if staging.reused is not None:
        return staging.reused, True
    try:
        target = Target(output, staging.path, storage)
        target.prepare()
        started = time.monotonic()
        result = run_graph(spec, inputs, target, settings)
        result.seconds = time.monotonic() - started
        raise_if_stopped()  # a stop signal whose Stop something dropped: publish nothing
        manifest = publish(staging, target, result, recipe, settings, inputs, tasks, fp, output)
    except BaseException as e:
        staging.abort()
        failure = _failure(e, output)
        if failure is None or failure is e:
            raise
        raise failure from (e if isinstance(e, OSError) else None)
    return manifest, staging.reused is not None


def _failure(e: BaseException, output: str) -> GymrayError | None:
    """What to tell the user about the exception that ended a build, or None to let
    it through as it is. Ray hands over a worker's or task's exception wrapped (its
    message a traceback): the cause is what the user needs, in one line. An OSError
    from storage (disk full, permissions, network) becomes a StorageIOError."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ray.exceptions.RayTaskError):
            e = e.cause
        elif isinstance(e, GymrayError):
            return e
        elif isinstance(e, OSError):
            return write_error(e, output, os.path.basename(e.filename) if e.filename else None)
        elif isinstance(e, ray.exceptions.RayError):
            e = e.__cause__  # e.g. Ray Data's UserCodeException, where its cause survived
        else:
            return None
    return None


def _resolved(output: str) -> str:
    # Expanded as storage.filesystem expands it: the path checked is the path written.
    return output if is_remote(output) else os.path.abspath(os.path.expanduser(output))


def check_output_path(output: str) -> None:
    """Refuse an output Ray would delete or that means another place than the user
    thinks: under ``ray job submit`` a relative path resolves against the job's
    working directory, which Ray removes when the job ends."""
    if is_remote(output):
        return
    resolved = _resolved(output)
    if "/runtime_resources/working_dir_files/" in resolved or "/ray/session_" in resolved:
        raise ConfigError(
            f"output {resolved} is inside Ray's per-job working directory, which Ray "
            "deletes: give an absolute path on shared storage (output=/shared/ds/...)"
        )
    if parent_submission_id() and not os.path.isabs(os.path.expanduser(output)):
        raise ConfigError(
            f"output={output} is relative, and this runs as Ray Job "
            f"{parent_submission_id()}: it would land in the job's working directory "
            f"({resolved}), which Ray may delete. Give an absolute path on shared storage "
            "(output=/shared/ds/...)"
        )


def check_launch(settings: SettingsBase, dry_run: bool = False) -> None:
    """Everything a launch needs that can be checked before the prepare: the NeMo RL
    checkout and its scripts, the run directory, the launcher, the environment to pass,
    and (unless a dry run) the job API and its token."""
    recipe = recipes.get(settings.algo)
    job = settings.job
    nemo_rl_dir = build.checkout_dir(job)
    if os.path.isdir(nemo_rl_dir):
        scripts = (
            {e.script for e in recipe.entrypoints.values()} if not job.script else {job.script}
        )
        missing = [s for s in sorted(scripts) if not os.path.isfile(os.path.join(nemo_rl_dir, s))]
        if missing and len(missing) == len(scripts):
            raise ConfigError(
                f"NeMo RL entrypoint {missing[0]} not found in job.nemo_rl_dir={nemo_rl_dir}: "
                "is that a NeMo RL checkout (or set job.script)?"
            )
    build.run_root(job, _resolved(settings.output))
    build.split_launcher(job.launcher)
    job.env()  # every job.pass_env variable must be set here
    if is_remote(settings.output) and not settings.storage.materialize_to:
        raise ConfigError(
            f"output {settings.output} is in an object store and NeMo RL reads local paths: "
            "set storage.materialize_to=<shared directory> (or output=/shared/...)"
        )
    if not dry_run:
        connect(job_address(settings))


def job_address(settings: SettingsBase) -> str | None:
    """``job.address``, else the cluster ``ray.address`` names (a GCS address: Ray's client
    asks it for the dashboard). A launch's job API is checked before the prepare joins
    Ray, so "the connected cluster" is not connected yet then."""
    if settings.job.address:
        return settings.job.address
    ray_address = settings.ray.address
    if ray_address in (None, "auto", "local") or "://" in ray_address:
        return None  # (found as job_api finds it: RAY_ADDRESS, this machine's cluster)
    return ray_address


def load(path: str, storage: Any = None) -> PrepareResult:
    """A dataset gymray wrote, from its directory (local, NFS, ``s3://``, ``gs://``).

    Example::

        ds = gymray.load("/shared/ds/sft")
        ds.counts["records"]; ds.dataset("train").take(2)
    """
    manifest = read_manifest(path, storage)
    if not manifest:
        raise StorageError(f"{path} is not a gymray dataset (no readable manifest.json)")
    manifest["output"] = _resolved(path)
    extra = {"output": manifest["output"]}
    if storage is not None:
        extra["storage"] = storage if isinstance(storage, dict) else storage.model_dump()
    settings = load_settings(manifest["algo"], extra)
    return PrepareResult(manifest["output"], manifest, True, paths(manifest), settings)


def submit(
    prepared: PrepareResult,
    *,
    job: dict | None = None,
    nemo_rl: dict | None = None,
    dry_run: bool = False,
) -> JobHandle:
    """Submit NeMo RL training for a prepared dataset as a Ray Job; returns a job handle.

    Example::

        ds = gymray.prepare("dpo", input="rollouts/", output="/shared/ds/dpo")
        job = gymray.submit(ds, job={"nemo_rl_dir": "/shared/nemo-rl"},
                            nemo_rl={"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})
        job.status(); job.logs(); job.wait(); job.stop()

    ``job`` holds ``job.*`` settings, ``nemo_rl`` the NeMo RL overrides. Rerunning the
    same step attaches to the existing job instead of training twice.
    """
    base = prepared.settings or load_settings(
        prepared.manifest["algo"], {"output": prepared.output}
    )
    settings = with_job(base, job, nemo_rl)
    manifest = _training_manifest(prepared.output, prepared.manifest, settings)
    return submit_training(
        settings.algo,
        manifest,
        settings.job,
        settings.nemo_rl,
        dry_run=dry_run,
        allow_empty=settings.allow_empty,
    )


def _training_manifest(output: str, manifest: dict, settings: SettingsBase) -> dict:
    """The manifest NeMo RL's paths come from: NeMo RL opens local paths only, so a
    dataset on an object store is materialized to ``storage.materialize_to``."""
    if not is_remote(output):
        return manifest
    local = local_dataset_path(output, settings.storage.materialize_to, settings.storage)
    return read_manifest(local) or manifest


def run(
    algo: str,
    *,
    wait: bool = True,
    dry_run: bool = False,
    config_files: list[str] | None = None,
    **overrides: Any,
) -> JobHandle:
    """``prepare`` then ``submit`` (then wait for the job, by default); returns the job handle.

    Example::

        job = gymray.run("sft", input="rollouts/", output="/shared/ds/sft",
                         job={"nemo_rl_dir": "/shared/nemo-rl"},
                         **{"nemo_rl.policy.model_name": "Qwen/Qwen2.5-1.5B"})
        job.status()   # 'SUCCEEDED'
    """
    prepared = prepare(algo, config_files=config_files, **overrides)
    handle = submit(prepared, dry_run=dry_run)
    if wait and not dry_run:
        handle.wait(follow_logs=False)
    return handle
