"""Ray Jobs for NeMo RL training: submit, attach, follow logs, status, stop, exit codes.

The training runs as its own Ray Job whose entrypoint is NeMo RL's script, run from the
NeMo RL checkout (`cd <checkout> && uv run python examples/run_X.py --config ...`).
gymray itself may run anywhere that reaches the job API: a laptop (job.address or
RAY_ADDRESS = http://head:8265), or inside a Ray Job on the same cluster (`ray job submit
-- python -m gymray.run dpo ...`), where the training becomes a child job and the driver
job follows it and stops it when it is itself stopped.

Submission ids are deterministic: `gymray-<algo>-<hash>` from the dataset fingerprint and
the merged config (see gymray.nemo_rl), plus the launch settings. Rerunning the same step
attaches to the job with that id, whatever its state, instead of training twice; if that
job FAILED or was STOPPED, gymray says so and exits with its code, unless
`job.on_failed=retry`, which submits `<id>-2`, `<id>-3`, ... (same run dir, so NeMo RL
resumes from the checkpoints already written).

Exit codes (follow, cli):
    0 SUCCEEDED (or submitted, with --no-wait; or a dry run)
    1 FAILED
    2 usage or config error (bad key, resources the cluster can never give, unknown id)
    3 STOPPED (by anyone, including gymray on Ctrl-C / SIGTERM)
    4 authentication error (missing or wrong Ray token)
    5 job API unreachable
    6 timed out waiting (job.timeout_s); the job keeps running

Secrets: values of job.env_vars and job.pass_env go into the job's runtime_env (Ray needs
them there; Ray's dashboard shows runtime envs to anyone with cluster access) and nowhere
gymray writes or prints: summaries, metadata, dry runs and the YAML show `<redacted>`,
and followed logs have every such value of 6+ characters replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pydantic
from pydantic import SecretStr

from gymray.nemo_rl import BuiltConfig, ConfigError, build_config, write_config

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_AUTH = 4
EXIT_UNREACHABLE = 5
EXIT_TIMEOUT = 6

STATUS_EXIT = {"SUCCEEDED": EXIT_SUCCEEDED, "FAILED": EXIT_FAILED, "STOPPED": EXIT_STOPPED}
TERMINAL = frozenset(STATUS_EXIT)
REDACTED = "<redacted>"
# Shorter values ("1", "true") are too common in logs to blank out.
MIN_REDACT_LEN = 6
# NeMo RL's driver passes its whole environment to ray.init(runtime_env=...): without this
# Ray refuses to merge it with the job's runtime_env env_vars.
OVERRIDE_ENV = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


class JobSettings(pydantic.BaseModel, extra="forbid"):
    """How to launch NeMo RL as a Ray Job (`job.*` on the gymray command line)."""

    nemo_rl_dir: str | None = None
    """Absolute path of the NeMo RL checkout on the cluster nodes (the job cds there)."""
    launcher: str = "uv run python"
    """Runs the script: `uv run python`, `python`, or an interpreter path."""
    base_config: str | None = None
    """NeMo RL base config, relative to nemo_rl_dir or absolute (default per algorithm)."""
    script: str | None = None
    """NeMo RL entrypoint script relative to nemo_rl_dir (default per algorithm)."""
    runs_dir: str | None = None
    """Where run configs, checkpoints and logs go (default <dataset dir>/runs)."""
    env_vars: dict[str, SecretStr] = {}
    """Environment for the training job; values are treated as secrets."""
    pass_env: list[str] = []
    """Names of variables copied from gymray's own environment (keeps values off argv)."""
    address: str | None = None
    """Job API address (http://head:8265); default RAY_API_SERVER_ADDRESS / RAY_ADDRESS,
    or the current cluster inside a Ray Job. When set, it wins over those variables."""
    entrypoint_num_cpus: float | None = 1
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] = {}
    submission_id: str | None = None
    """Override the deterministic id (e.g. to train again after a failure)."""
    metadata: dict[str, str] = {}
    """Extra Ray Job metadata."""
    timeout_s: float | None = None
    """Give up waiting after this long (exit 6); the job keeps running."""
    on_failed: Literal["report", "retry"] = "report"
    """When this step's job already FAILED/STOPPED: report it, or submit a new attempt."""
    check_resources: bool = True
    """Refuse entrypoint resources larger than the cluster's total (off for autoscaling)."""

    def env(self) -> dict[str, str]:
        """The job's environment variables, with real values (never print this)."""
        out: dict[str, str] = {}
        for name in self.pass_env:
            if name not in os.environ:
                raise ConfigError(
                    f"job.pass_env names {name}, which is not set in gymray's environment"
                )
            out[name] = os.environ[name]
        out.update({k: v.get_secret_value() for k, v in self.env_vars.items()})
        return out


class JobError(RuntimeError):
    """A job problem reported as one line and an exit code."""

    exit_code = EXIT_USAGE


class AuthError(JobError):
    exit_code = EXIT_AUTH


class UnreachableError(JobError):
    exit_code = EXIT_UNREACHABLE


class ResourceError(JobError):
    exit_code = EXIT_USAGE


class Redactor:
    """Replaces secret values in text and structures."""

    def __init__(self, secrets: Mapping[str, str] | None = None):
        values = {v for v in (secrets or {}).values() if v and len(v) >= MIN_REDACT_LEN}
        # Longest first so a secret that contains another is blanked whole.
        self._values = sorted(values, key=len, reverse=True)
        self._names = set(secrets or {})

    def text(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: (REDACTED if k in self._names else v) for k, v in env.items()}

    def deep(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.deep(v) for v in obj]
        return obj


# ---------------------------------------------------------------------------------------
# Connecting.


def auth_token() -> str | None:
    """The Ray auth token, from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Sent explicitly because Ray 2.56's client only sends one when RAY_AUTH_MODE=token is
    set in the client's environment, and a 401 is a poor way to learn that.
    """
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError as e:
            raise AuthError(
                f"RAY_AUTH_TOKEN_PATH={path} cannot be read ({e.strerror}): point it at "
                "the cluster's token file or set RAY_AUTH_TOKEN"
            ) from None
    default = Path.home() / ".ray" / "auth_token"
    try:
        return default.read_text().strip() or None
    except OSError:
        return None


_ENV_LOCK = threading.Lock()


@contextmanager
def _address_env(address: str | None):
    # Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS win over an address passed
    # in; an explicit job.address must win, so hide them while the client is built.
    if not address:
        yield
        return
    with _ENV_LOCK:
        saved = {
            k: os.environ.pop(k)
            for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
            if k in os.environ
        }
        try:
            yield
        finally:
            os.environ.update(saved)


def _describe_address(address: str | None) -> str:
    return (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or "the local Ray cluster"
    )


def _auth_exc() -> tuple[type[BaseException], ...]:
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # pragma: no cover - older Ray
        return ()
    return (AuthenticationError,)


def _auth_error(exc: BaseException, where: str) -> AuthError:
    text = str(exc)
    if "401" in text or "Missing" in text or "no authentication token" in text:
        return AuthError(
            f"the Ray job API at {where} requires a token and none was sent: set "
            "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the cluster's token to "
            "~/.ray/auth_token"
        )
    return AuthError(
        f"the Ray job API at {where} rejected the auth token (wrong token): check "
        "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token against the cluster's"
    )


def connect(address: str | None = None):
    """A JobSubmissionClient for `address` (see JobSettings.address), with the auth token.

    Raises AuthError / UnreachableError with one-line messages.
    """
    from ray.job_submission import JobSubmissionClient

    where = _describe_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with _address_env(address):
            return JobSubmissionClient(address, headers=headers)
    except _auth_exc() as e:
        raise _auth_error(e, where) from None
    except (ConnectionError, OSError) as e:
        raise UnreachableError(
            f"cannot reach the Ray job API at {where} ({e}): check job.address / "
            "RAY_ADDRESS (e.g. http://head:8265) and that the dashboard is running"
        ) from None
    except Exception as e:  # Ray raises bare RuntimeError/ValueError for bad addresses.
        raise UnreachableError(
            f"cannot reach the Ray job API at {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Set job.address or RAY_ADDRESS (e.g. http://head:8265)"
        ) from None


def _call(fn, *args, where: str = "the Ray job API", **kwargs):
    try:
        return fn(*args, **kwargs)
    except _auth_exc() as e:
        raise _auth_error(e, where) from None
    except ConnectionError as e:
        raise UnreachableError(f"lost the Ray job API at {where}: {e}") from None


def _job_info(client, submission_id: str):
    """JobInfo, or None when no job has this id."""
    try:
        return _call(client.get_job_info, submission_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            return None
        raise


def parent_submission_id() -> str | None:
    """The submission id of the Ray Job this process runs in, if any.

    Ray 2.56 sets no dedicated variable; the job supervisor passes the job's metadata,
    which holds `job_submission_id`, in RAY_JOB_CONFIG_JSON_ENV_VAR.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------
# Resources.


def cluster_totals(client) -> dict[str, float] | None:
    """Total resources of the cluster's alive nodes, or None when they cannot be read.

    Asked of the job API itself: the Ray this process may be connected to (a
    notebook's, a test session's) is not necessarily the cluster the job goes to."""
    try:
        r = _call(client._do_request, "GET", "/nodes?view=summary")
        if r.status_code != 200:
            return None
        totals: dict[str, float] = {}
        for node in r.json()["data"]["summary"]:
            raylet = node.get("raylet", {})
            if raylet.get("state", "ALIVE") != "ALIVE":
                continue
            for k, v in raylet.get("resourcesTotal", {}).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return totals or None
    except JobError:
        raise
    except Exception:
        return None


def parent_resources(client, parent: str) -> dict[str, float]:
    """Entrypoint resources held by the running job `parent` ({} when unknown).

    The job API does not return them; the job's supervisor actor
    (`_ray_internal_job_actor_<id>`) is created with exactly those resources, and the
    state API lists them.
    """
    from urllib.parse import urlencode

    query = urlencode(
        {
            "filter_keys": "name",
            "filter_predicates": "=",
            "filter_values": f"_ray_internal_job_actor_{parent}",
            "detail": "1",
        }
    )
    try:
        r = _call(client._do_request, "GET", f"/api/v0/actors?{query}")
        rows = r.json()["data"]["result"]["result"] if r.status_code == 200 else []
    except JobError:
        raise
    except Exception:
        return {}
    for row in rows:
        if row.get("state") == "ALIVE":
            return {k: float(v) for k, v in (row.get("required_resources") or {}).items()}
    return {}


def check_resources(client, job: JobSettings, parent: str | None) -> list[str]:
    """Refuse entrypoint resources the cluster can never give; return warnings."""
    totals = cluster_totals(client)
    if totals is None:
        return ["cluster resources could not be read: entrypoint resources not checked"]
    held = parent_resources(client, parent) if parent else {}
    asks = {
        "CPU": ("job.entrypoint_num_cpus", job.entrypoint_num_cpus),
        "GPU": ("job.entrypoint_num_gpus", job.entrypoint_num_gpus),
        "memory": ("job.entrypoint_memory", job.entrypoint_memory),
        **{k: (f"job.entrypoint_resources.{k}", v) for k, v in job.entrypoint_resources.items()},
    }
    for res, (name, ask) in asks.items():
        if not ask:
            continue
        # The dashboard's node summary spells custom resources in camelCase.
        camel = res.split("_")[0] + "".join(p.title() for p in res.split("_")[1:])
        total = totals.get(res, totals.get(camel, 0.0))
        parent_held = held.get(res, 0.0)
        if ask + parent_held > total:
            because = (
                f" plus the {parent_held:g} held by the parent job {parent} (which waits for it)"
                if parent_held
                else ""
            )
            raise ResourceError(
                f"{name}={ask:g}{because} exceeds the cluster's total {res} of {total:g}: "
                "the job would stay PENDING forever. Lower it"
                + (
                    " or submit the parent job with fewer entrypoint resources"
                    if parent_held
                    else ""
                )
                + " (or set job.check_resources=false on an autoscaling cluster)"
            )
    return []


# ---------------------------------------------------------------------------------------
# The handle.


@dataclass
class JobHandle:
    """A submitted (or attached, or dry-run) NeMo RL training job."""

    submission_id: str
    algo: str
    entrypoint: str
    address: str | None = None
    dry_run: bool = False
    attached: bool = False
    config: BuiltConfig | None = None
    runtime_env: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    redactor: Redactor = field(default_factory=Redactor, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def config_path(self) -> str | None:
        return self.config.config_path if self.config else None

    @property
    def client(self):
        if self.dry_run:
            raise JobError("a dry run submitted nothing: there is no job to ask")
        if self._client is None:
            self._client = connect(self.address)
        return self._client

    def info(self):
        info = _job_info(self.client, self.submission_id)
        if info is None:
            raise JobError(f"no job {self.submission_id} on {_describe_address(self.address)}")
        return info

    def status(self) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (DRY_RUN for a dry run)."""
        if self.dry_run:
            return "DRY_RUN"
        return str(self.info().status.value)

    def exit_code(self) -> int | None:
        """gymray's exit code for the job's state (None while it runs)."""
        status = self.status()
        if self.dry_run:
            return EXIT_SUCCEEDED
        return STATUS_EXIT.get(status)

    def driver_exit_code(self) -> int | None:
        """The NeMo RL process's own exit code, once it has exited."""
        return None if self.dry_run else self.info().driver_exit_code

    def logs(self) -> str:
        """The job's logs so far, with secrets redacted."""
        if self.dry_run:
            return ""
        return self.redactor.text(_call(self.client.get_job_logs, self.submission_id))

    def stop(self) -> bool:
        """Ask Ray to stop the job; True if it was running or pending."""
        if self.dry_run:
            return False
        return bool(_call(self.client.stop_job, self.submission_id))

    def wait(
        self,
        follow_logs: bool = False,
        stream: IO[str] | None = sys.stdout,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
    ) -> str:
        """Block until the job ends; optionally stream its (redacted) logs. Returns status.

        Raises TimeoutError after `timeout_s` (default job.timeout_s); the job keeps
        running.
        """
        if self.dry_run:
            return "DRY_RUN"
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s if timeout_s else None
        tail = _LogTail(self.client, self.submission_id) if follow_logs and stream else None
        pending = ""
        try:
            while True:
                status = self.status()
                if tail is not None:
                    pending = self._emit(tail.drain(), pending, stream)
                if status in TERMINAL:
                    if tail is not None:
                        tail.join(5.0)
                        pending = self._emit(tail.drain(), pending, stream, final=True)
                    return status
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"job {self.submission_id} still {status} after {timeout_s:g}s"
                    )
                time.sleep(poll_s)
        finally:
            if tail is not None:
                tail.close()

    def _emit(self, chunks: list[str], pending: str, stream, final: bool = False) -> str:
        # Redact whole lines so a secret is never split across two writes.
        text = pending + "".join(chunks)
        cut = len(text) if final else text.rfind("\n") + 1
        if cut:
            stream.write(self.redactor.text(text[:cut]))
            stream.flush()
        return text[cut:]

    def summary(self, *, include_config: bool = False) -> dict[str, Any]:
        """JSON-able description of the job, with secrets redacted."""
        out: dict[str, Any] = {
            "submission_id": self.submission_id,
            "algo": self.algo,
            "dry_run": self.dry_run,
            "attached": self.attached,
            "address": self.address,
            "entrypoint": self.entrypoint,
            "runtime_env": self.runtime_env,
            "resources": self.resources,
            "metadata": self.metadata,
            "warnings": self.warnings,
        }
        if self.config is not None:
            out["run"] = self.config.info()
            if include_config:
                out["config_yaml"] = self.config.config_yaml
        if self.dry_run:
            out["status"] = "DRY_RUN"
        else:
            info = self.info()
            out["status"] = str(info.status.value)
            out["message"] = info.message
            out["driver_exit_code"] = info.driver_exit_code
            out["exit_code"] = STATUS_EXIT.get(out["status"])
            if not self.config:
                out["metadata"] = {**(info.metadata or {}), **self.metadata}
        return self.redactor.deep(out)


class _LogTail:
    """Streams a job's logs over Ray's websocket in a background thread."""

    def __init__(self, client, submission_id: str):
        self._queue: queue.Queue[str] = queue.Queue()
        self._client = client
        self._id = submission_id
        self._count = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gymray-logs")
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            # The websocket can close early (job still pending, proxy timeout): reopen it
            # until the job has ended. Logs are best effort; status polling decides.
            while not self._closed.is_set():
                try:
                    loop.run_until_complete(self._tail())
                except Exception:
                    pass
                try:
                    if self._client.get_job_status(self._id).is_terminal():
                        return
                except Exception:
                    return
                self._closed.wait(1.0)
        finally:
            loop.close()

    async def _tail(self) -> None:
        # Each websocket replays the log from its start: skip what was already queued.
        skip = self._count
        async for chunk in self._client.tail_job_logs(self._id):
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            self._count += len(chunk)
            self._queue.put(chunk)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self._closed.set()


# ---------------------------------------------------------------------------------------
# Submitting.


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
    import hashlib

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
) -> JobHandle:
    """Write NeMo RL's config for a prepared dataset and submit the training as a Ray Job.

    Attaches instead when a job with the same (deterministic) submission id exists. With
    `dry_run`, builds everything and returns a handle describing it, writing and
    submitting nothing. Raises ConfigError (bad settings or keys) or JobError (auth,
    cluster, resources), each with an `exit_code` (ConfigError: 2).

    >>> h = submit_training("dpo", manifest, JobSettings(nemo_rl_dir="/shared/nemo-rl"),
    ...                     {"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})  # doctest: +SKIP
    >>> h.wait(follow_logs=True)  # doctest: +SKIP
    'SUCCEEDED'
    """
    settings = _job_settings(job)
    built = build_config(algo, manifest, settings, overrides, templates_dir)
    env = settings.env()
    redactor = Redactor(env)
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
        warnings=list(built.warnings),
        timeout_s=settings.timeout_s,
        redactor=redactor,
    )
    if dry_run:
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


def attach(submission_id: str, address: str | None = None) -> JobHandle:
    """A handle for an existing job (status, logs, stop, wait)."""
    handle = JobHandle(submission_id=submission_id, algo="", entrypoint="", address=address)
    info = handle.info()
    handle.entrypoint = info.entrypoint
    handle.algo = (info.metadata or {}).get("gymray.algo", "")
    return handle


# ---------------------------------------------------------------------------------------
# Following and the CLI verbs.


def _say(msg: str) -> None:
    print(f"gymray: {msg}", file=sys.stderr, flush=True)


class _Interrupted(Exception):
    pass


@contextmanager
def _stop_on_signals():
    # SIGTERM is what `ray job stop` sends a driver job; Ctrl-C is SIGINT. Both must stop
    # the child training job, or it would keep the GPUs after its follower is gone.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop_and_wait(handle: JobHandle, timeout_s: float = 60.0) -> str:
    handle.stop()
    deadline = time.monotonic() + timeout_s
    status = handle.status()
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = handle.status()
    return status


def follow(
    handle: JobHandle,
    *,
    wait: bool = True,
    json_output: bool = False,
    stream: IO[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """Report a submitted job and, with `wait`, stream its logs until it ends.

    Returns the exit code (module docstring). Human messages go to stderr prefixed
    `gymray:`; logs go to stdout (to stderr with `json_output`, whose stdout is one JSON
    summary; with `extra`, the summary is `{**extra, "job": <job summary>}`). SIGTERM or
    Ctrl-C while following stops the job.
    """
    out = sys.stdout
    logs = stream or (sys.stderr if json_output else sys.stdout)
    try:
        for w in handle.warnings:
            _say(w)
        if handle.dry_run:
            if json_output:
                print(
                    json.dumps(_with(extra, handle.summary(include_config=True)), indent=2),
                    file=out,
                )
            else:
                _print_dry_run(handle, out)
            return EXIT_SUCCEEDED
        if handle.attached:
            status = handle.status()
            if status in ("FAILED", "STOPPED"):
                _say(
                    f"job {handle.submission_id} already {status}; not training again. "
                    "Rerun with job.on_failed=retry (or a new job.submission_id) to retry"
                )
                if json_output:
                    print(json.dumps(_with(extra, handle.summary()), indent=2), file=out)
                return STATUS_EXIT[status]
        else:
            _say(f"submitted job {handle.submission_id}")
        if not wait:
            if json_output:
                print(json.dumps(_with(extra, handle.summary()), indent=2), file=out)
            else:
                print(handle.submission_id, file=out, flush=True)
            return EXIT_SUCCEEDED
        with _stop_on_signals():
            try:
                status = handle.wait(follow_logs=True, stream=logs)
            except _Interrupted as sig:
                _say(f"{sig}: stopping job {handle.submission_id}")
                try:
                    status = _stop_and_wait(handle)
                except _Interrupted:
                    _say(f"not waiting for job {handle.submission_id} to stop")
                    return EXIT_STOPPED
            except TimeoutError as e:
                _say(f"{e}; it keeps running (gymray.run stop {handle.submission_id})")
                if json_output:
                    print(json.dumps(_with(extra, handle.summary()), indent=2), file=out)
                return EXIT_TIMEOUT
        code = STATUS_EXIT.get(status, EXIT_FAILED)
        _say(f"job {handle.submission_id} {status}")
        if json_output:
            print(json.dumps(_with(extra, handle.summary()), indent=2), file=out)
        return code
    except (JobError, ConfigError) as e:
        _say(f"error: {e}")
        return getattr(e, "exit_code", EXIT_USAGE)


def _with(extra: Mapping[str, Any] | None, summary: dict) -> dict:
    return summary if extra is None else {**extra, "job": summary}


def submit_and_follow(
    algo: str,
    manifest: Mapping[str, Any],
    job: JobSettings | Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    wait: bool = True,
    json_output: bool = False,
) -> int:
    """submit_training then follow, as the CLI does: errors become one line + exit code."""
    try:
        handle = submit_training(algo, manifest, job, overrides, dry_run=dry_run)
    except (JobError, ConfigError) as e:
        _say(f"error: {e}")
        return e.exit_code
    return follow(handle, wait=wait, json_output=json_output)


def _print_dry_run(handle: JobHandle, out: IO[str]) -> None:
    s = handle.summary()
    print("# dry run: nothing was written or submitted", file=out)
    print(f"# submission id: {s['submission_id']}", file=out)
    print(f"# entrypoint:    {s['entrypoint']}", file=out)
    print(f"# runtime_env:   {json.dumps(s['runtime_env'])}", file=out)
    print(f"# resources:     {json.dumps(s['resources'])}", file=out)
    print(f"# metadata:      {json.dumps(s['metadata'])}", file=out)
    if handle.config is not None:
        print(f"# config file:   {handle.config.config_path}", file=out)
        print(handle.redactor.text(handle.config.config_yaml), file=out, end="")


def cli(verb: str, argv: Sequence[str]) -> int:
    """`python -m gymray.run status|logs|stop SUBMISSION_ID [--address A] [--json] [--follow]`.

    status: prints the state; exit 0 while PENDING/RUNNING or SUCCEEDED, 1 FAILED,
    3 STOPPED (with --follow: waits, streaming logs, and exits by the final state).
    logs: prints the logs (with --follow: streams until the job ends, exit by state).
    stop: stops the job and waits (up to 60 s) until Ray reports it ended; exit 0.
    """
    parser = argparse.ArgumentParser(prog=f"python -m gymray.run {verb}")
    parser.add_argument("submission_id")
    parser.add_argument("--address", default=None, help="job API, e.g. http://head:8265")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--follow", action="store_true", help="stream logs until the end")
    if verb not in ("status", "logs", "stop"):
        _say(f"error: unknown job verb {verb!r}: use status, logs or stop")
        return EXIT_USAGE
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_SUCCEEDED
    try:
        handle = attach(args.submission_id, args.address)
        if args.follow and verb != "stop":
            handle.attached = False
            handle.warnings = []
            return _follow_existing(handle, args.json)
        if verb == "stop":
            was_running = handle.stop()
            status = _stop_and_wait(handle) if was_running else handle.status()
            _say(f"job {handle.submission_id} {status}")
            if args.json:
                print(json.dumps(handle.summary(), indent=2))
            return EXIT_SUCCEEDED
        if verb == "logs":
            if args.json:
                print(json.dumps({**handle.summary(), "logs": handle.logs()}, indent=2))
            else:
                sys.stdout.write(handle.logs())
            return EXIT_SUCCEEDED
        summary = handle.summary()
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            msg = f" ({summary['message']})" if summary.get("message") else ""
            print(f"{handle.submission_id} {summary['status']}{msg}")
        return STATUS_EXIT.get(summary["status"], EXIT_SUCCEEDED)
    except (JobError, ConfigError) as e:
        _say(f"error: {e}")
        return getattr(e, "exit_code", EXIT_USAGE)


def _follow_existing(handle: JobHandle, json_output: bool) -> int:
    # Following an existing job (not one we submitted): Ctrl-C only detaches.
    try:
        status = handle.wait(follow_logs=True, stream=sys.stderr if json_output else sys.stdout)
    except KeyboardInterrupt:
        _say(f"detached; job {handle.submission_id} keeps running")
        return EXIT_SUCCEEDED
    if json_output:
        print(json.dumps(handle.summary(), indent=2))
    _say(f"job {handle.submission_id} {status}")
    return STATUS_EXIT.get(status, EXIT_FAILED)
