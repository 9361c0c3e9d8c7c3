"""Submitting NeMo RL training as a Ray Job, and following it to its end.

The training runs as its own Ray Job whose entrypoint is NeMo RL's script, run from the
NeMo RL checkout (`cd <checkout> && uv run python examples/run_X.py --config ...`).
Inside a Ray Job (`ray job submit -- python -m gymray.run dpo ...`) the training becomes
a child job; the driver job follows it and stops it when it is itself stopped.

Submission ids are deterministic: `gymray-<algo>-<hash>` from the dataset fingerprint and
the merged config (see gymray.nemo_rl), plus the launch settings. Rerunning the same step
attaches to the job with that id, whatever its state, instead of training twice; if that
job FAILED or was STOPPED, gymray says so and exits with its code, unless
`job.on_failed=retry`, which submits `<id>-2`, `<id>-3`, ... (same run dir, so NeMo RL
resumes from the checkpoints already written).

Secrets: values of job.env_vars and job.pass_env go into the job's runtime_env (Ray needs
them there; Ray's dashboard shows runtime envs to anyone with cluster access) and nowhere
gymray writes or prints: summaries, metadata, dry runs and the YAML show `<redacted>`,
and followed logs have every such value of 6+ characters replaced.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic

from gymray.config import JobSettings
from gymray.errors import (
    ConfigError,
    JobError,
)
from gymray.jobs.client import (
    _call,
    _describe_address,
    _job_info,
    check_resources,
    connect,
    parent_submission_id,
)
from gymray.jobs.handle import TERMINAL, JobHandle, Redactor
from gymray.nemo_rl.build import BuiltConfig, build_config, write_config

# NeMo RL's driver passes its whole environment to ray.init(runtime_env=...): without this
# Ray refuses to merge it with the job's runtime_env env_vars.
OVERRIDE_ENV = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


def _job_settings(job: JobSettings | Mapping[str, Any] | None) -> JobSettings:
    if isinstance(job, JobSettings):
        return job
    try:
        return JobSettings.model_validate(dict(job or {}))
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"job.{loc}: {first['msg']}") from None


def _hash_launch(built: BuiltConfig, job: JobSettings, env_names: Sequence[str]) -> str:

    launch = {
        "run": built.run_id,
        "entrypoint": built.entrypoint,
        "env": sorted(env_names),
        "cpus": job.entrypoint_num_cpus,
        "gpus": job.entrypoint_num_gpus,
        "memory": job.entrypoint_memory,
        "resources": job.entrypoint_resources,
    }
    return hashlib.sha256(json.dumps(launch, sort_keys=True).encode()).hexdigest()[:12]


def _exposed(env: Mapping[str, str]) -> list[str]:
    if not env:
        return []
    return [
        f"job.env_vars / job.pass_env ({', '.join(sorted(env))}) travel in the job's "
        "runtime_env, which Ray shows to anyone who can list jobs (ray job list, the jobs "
        "API, the dashboard): pass secrets with job.env_file instead"
    ]


def _env_file_values(path: str | None) -> dict[str, str]:
    """The values of job.env_file when it is readable here: only to redact them from the
    logs gymray relays (the job reads the file itself, on the cluster)."""
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip()] = value.strip().strip("'\"")
    return out


def default_submission_id(built: BuiltConfig, job: JobSettings, env_names: Sequence[str]) -> str:
    """`gymray-<algo>-<hash12>` over the run id and the launch (entrypoint, resources, env
    var names; not their values): a fixed launcher or resource ask after a failure is a
    new job, on the same run dir."""
    return f"gymray-{built.algo}-{_hash_launch(built, job, env_names)}"


def submit_training(
    algo: str,
    manifest: Mapping[str, Any],
    job: JobSettings | Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    templates_dir: str | Path | None = None,
    allow_empty: bool = False,
) -> JobHandle:
    """Write NeMo RL's config for a prepared dataset and submit the training as a Ray Job.

    Attaches instead when a job with the same (deterministic) submission id exists. With
    `dry_run`, writes the exact config files it would launch with and returns a handle
    describing the job, submitting nothing. Raises ConfigError (bad settings or keys),
    EmptyDatasetError (no training records, unless `allow_empty`) or JobError (auth,
    cluster, resources), each with an `exit_code`.

    >>> h = submit_training("dpo", manifest, JobSettings(nemo_rl_dir="/shared/nemo-rl"),
    ...                     {"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})  # doctest: +SKIP
    >>> h.wait(follow_logs=True)  # doctest: +SKIP
    'SUCCEEDED'
    """
    settings = _job_settings(job)
    built = build_config(algo, manifest, settings, overrides, templates_dir, allow_empty)
    env = settings.env()
    redactor = Redactor({**env, **_env_file_values(settings.env_file)})
    submission_id = settings.submission_id or default_submission_id(built, settings, list(env))
    parent = parent_submission_id()
    metadata = {
        **settings.metadata,
        "gymray.algo": algo,
        "gymray.dataset": built.dataset,
        "gymray.config": built.config_path,
        "gymray.fingerprint": built.fingerprint,
        "gymray.run_id": built.run_id,
        "gymray.env_vars": ",".join(sorted(env)),
    }
    if parent:
        metadata["gymray.parent_job"] = parent
    resources = {
        k: v
        for k, v in {
            "entrypoint_num_cpus": settings.entrypoint_num_cpus,
            "entrypoint_num_gpus": settings.entrypoint_num_gpus,
            "entrypoint_memory": settings.entrypoint_memory,
            "entrypoint_resources": settings.entrypoint_resources or None,
        }.items()
        if v is not None
    }
    handle = JobHandle(
        submission_id=submission_id,
        algo=algo,
        entrypoint=built.entrypoint,
        address=settings.address,
        dry_run=dry_run,
        config=built,
        runtime_env={"env_vars": redactor.env({**OVERRIDE_ENV, **env})},
        resources=resources,
        metadata=redactor.deep(metadata),
        warnings=list(built.warnings) + _exposed(env),
        timeout_s=settings.timeout_s,
        redactor=redactor,
    )
    if dry_run:
        write_config(built)
        return handle

    client = connect(settings.address)
    handle._client = client
    where = _describe_address(settings.address)
    existing = _job_info(client, submission_id)
    if settings.on_failed == "retry" and not settings.submission_id:
        # Attempts are <id>, <id>-2, <id>-3, ...: attach to the first one that did not
        # fail, or submit the next number.
        attempt = 1
        while existing is not None and existing.status.value in ("FAILED", "STOPPED"):
            attempt += 1
            submission_id = f"{handle.submission_id}-{attempt}"
            existing = _job_info(client, submission_id)
        handle.submission_id = submission_id
    if existing is not None:
        handle.attached = True
        handle.warnings.append(
            f"job {submission_id} already exists ({existing.status.value}): attached to it "
            "instead of training again"
        )
        return handle

    if settings.check_resources:
        handle.warnings.extend(check_resources(client, settings, parent))
    write_config(built)
    try:
        _call(
            client.submit_job,
            entrypoint=built.entrypoint,
            submission_id=submission_id,
            runtime_env={"env_vars": {**OVERRIDE_ENV, **env}},
            metadata=handle.metadata,
            where=where,
            **resources,
        )
    except RuntimeError as e:
        if "already exists" not in str(e):
            raise JobError(f"Ray refused job {submission_id}: {redactor.text(str(e))}") from None
        # Another submitter won the race for this id: same step, so attach.
        handle.attached = True
        handle.warnings.append(f"job {submission_id} was submitted concurrently: attached")
    return handle


def stop_and_wait(handle: JobHandle, timeout_s: float = 60.0) -> str:
    handle.stop()
    deadline = time.monotonic() + timeout_s
    status = handle.status()
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = handle.status()
    return status
