"""A handle on a NeMo RL training job: status, logs (redacted), stop, wait."""

from __future__ import annotations

import asyncio
import html
import queue
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from gymray.errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, JobError
from gymray.jobs.client import _call, _describe_address, _job_info, connect
from gymray.nemo_rl.build import BuiltConfig

STATUS_EXIT = {"SUCCEEDED": EXIT_OK, "FAILED": EXIT_FAILED, "STOPPED": EXIT_STOPPED}
TERMINAL = frozenset(STATUS_EXIT)
REDACTED = "<redacted>"
# Shorter values ("1", "true") are too common in logs to blank out.
MIN_REDACT_LEN = 6


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

    def __repr__(self) -> str:
        state = "dry run" if self.dry_run else "attached" if self.attached else "submitted"
        return f"JobHandle({self.submission_id}, {self.algo}, {state})"

    def _repr_html_(self) -> str:
        rows = [("job", self.submission_id), ("algo", self.algo), ("entrypoint", self.entrypoint),
                ("config", self.config_path or "")]  # fmt: skip
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        return f"<table>{cells}</table>"

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
            return EXIT_OK
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


def attach(submission_id: str, address: str | None = None) -> JobHandle:
    """A handle for an existing job (status, logs, stop, wait)."""
    handle = JobHandle(submission_id=submission_id, algo="", entrypoint="", address=address)
    info = handle.info()
    handle.entrypoint = info.entrypoint
    handle.algo = (info.metadata or {}).get("gymray.algo", "")
    return handle
