"""The command line: ``python -m gymray.run <algo> [key=value ...]`` and the job verbs.

    python -m gymray.run sft input=rollouts/ output=/shared/ds/sft --prepare-only
    python -m gymray.run dpo input=s3://b/r/ output=/shared/ds/dpo job.nemo_rl_dir=/shared/nemo-rl
    python -m gymray.run status|logs|stop SUBMISSION_ID

A skin over :mod:`gymray.api`: it parses, calls the API, prints, and turns the
outcome into an exit code (:mod:`gymray.errors`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from gymray import api
from gymray.config import load_settings
from gymray.errors import (
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    GymrayError,
    Interrupted,
)
from gymray.jobs.handle import STATUS_EXIT, JobHandle, attach
from gymray.jobs.submit import stop_and_wait, stop_on_signals
from gymray.recipes import ALGOS

JOB_VERBS = ("status", "logs", "stop")

USAGE = f"""\
usage: python -m gymray.run {{{",".join(ALGOS)}}} [key=value ...] [--config FILE]... [--prepare-only]
                            [--dry-run] [--no-wait] [--json]
       python -m gymray.run {{status,logs,stop}} SUBMISSION_ID [--address URL] [--json]

settings are OmegaConf dotlist keys, e.g. input=rollouts/ output=/shared/ds/sft
sft.format=simple sft.reward_threshold=0.8 split.val_fraction=0.1 nemo_rl.policy.model_name=...
precedence: defaults < configs/<algo>.yaml < --config files < key=value
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gymray.run", usage=USAGE, add_help=True)
    p.add_argument("algo", choices=ALGOS)
    p.add_argument("overrides", nargs="*", help="key=value settings")
    p.add_argument("--config", action="append", default=[], help="YAML settings file (repeatable)")
    p.add_argument("--prepare-only", action="store_true", help="write the dataset and stop")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="prepare, print the NeMo RL config and job, submit nothing",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="return after submitting the training job"
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in JOB_VERBS:
        return job_verb(argv[0], argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    args = _parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="gymray: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(args.algo, args.overrides, args.config)
        result = api.prepare(settings=settings)
    except GymrayError as e:
        _say(f"error: {e}")
        return e.exit_code
    summary = {"algo": args.algo, **result.summary()}
    _print_prepare(result)
    if args.prepare_only:
        if args.json:
            print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        if not result.counts["records"]["train"] and not settings.allow_empty:
            _say("error: no training records were written (report.md says why); "
                 "set allow_empty=true to accept an empty dataset")  # fmt: skip
            return EXIT_EMPTY
        return EXIT_OK
    try:
        handle = api.submit(result, dry_run=args.dry_run)
    except GymrayError as e:
        _say(f"error: {e}")
        return e.exit_code
    return follow(
        handle, wait=not args.no_wait and not args.dry_run, json_output=args.json,
        extra={"prepare": summary},
    )  # fmt: skip


def _say(msg: str) -> None:
    print(f"gymray: {msg}", file=sys.stderr, flush=True)


def _print_prepare(result: api.PrepareResult) -> None:
    c = result.counts
    verb = "reused" if result.reused else "wrote"
    filtered = sum(c["filtered"].values())
    rejected = sum(c["rejected"].values())
    _say(
        f"{verb} {result.output}: {c['records']['train']} train / {c['records']['val']} val "
        f"records from {c['input_lines']} lines (used {c['used']}, filtered {filtered}, "
        f"rejected {rejected})"
    )
    for reason, n in sorted(c["rejected"].items(), key=lambda kv: -kv[1]):
        _say(f"  rejected {n} x {reason} (see rejects.jsonl)")
    for w in result.manifest.get("warnings", []):
        _say(f"warning: {w}")


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
            return EXIT_OK
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
            return EXIT_OK
        with stop_on_signals():
            try:
                status = handle.wait(follow_logs=True, stream=logs)
            except Interrupted as sig:
                _say(f"{sig}: stopping job {handle.submission_id}")
                try:
                    status = stop_and_wait(handle)
                except Interrupted:
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
    except GymrayError as e:
        _say(f"error: {e}")
        return getattr(e, "exit_code", EXIT_USAGE)


def _with(extra: Mapping[str, Any] | None, summary: dict) -> dict:
    return summary if extra is None else {**extra, "job": summary}


def _print_dry_run(handle: JobHandle, out: IO[str]) -> None:
    s = handle.summary()
    print("# dry run: the config files below were written; no job was submitted", file=out)
    print(f"# submission id: {s['submission_id']}", file=out)
    print(f"# entrypoint:    {s['entrypoint']}", file=out)
    print(f"# runtime_env:   {json.dumps(s['runtime_env'])}", file=out)
    print(f"# resources:     {json.dumps(s['resources'])}", file=out)
    print(f"# metadata:      {json.dumps(s['metadata'])}", file=out)
    if handle.config is not None:
        print(f"# config file:   {handle.config.config_path}", file=out)
        print(f"# base file:     {handle.config.base_path}", file=out)
        print(handle.redactor.text(handle.config.config_yaml), file=out, end="")


def _follow_existing(handle: JobHandle, json_output: bool) -> int:
    # Following an existing job (not one we submitted): Ctrl-C only detaches.
    try:
        status = handle.wait(follow_logs=True, stream=sys.stderr if json_output else sys.stdout)
    except KeyboardInterrupt:
        _say(f"detached; job {handle.submission_id} keeps running")
        return EXIT_OK
    if json_output:
        print(json.dumps(handle.summary(), indent=2))
    _say(f"job {handle.submission_id} {status}")
    return STATUS_EXIT.get(status, EXIT_FAILED)


def job_verb(verb: str, argv: Sequence[str]) -> int:
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
    if verb not in JOB_VERBS:
        _say(f"error: unknown job verb {verb!r}: use status, logs or stop")
        return EXIT_USAGE
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    try:
        handle = attach(args.submission_id, args.address)
        if args.follow and verb != "stop":
            handle.attached = False
            handle.warnings = []
            return _follow_existing(handle, args.json)
        if verb == "stop":
            was_running = handle.stop()
            status = stop_and_wait(handle) if was_running else handle.status()
            _say(f"job {handle.submission_id} {status}")
            if args.json:
                print(json.dumps(handle.summary(), indent=2))
            return EXIT_OK
        if verb == "logs":
            if args.json:
                print(json.dumps({**handle.summary(), "logs": handle.logs()}, indent=2))
            else:
                sys.stdout.write(handle.logs())
            return EXIT_OK
        summary = handle.summary()
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            msg = f" ({summary['message']})" if summary.get("message") else ""
            print(f"{handle.submission_id} {summary['status']}{msg}")
        return STATUS_EXIT.get(summary["status"], EXIT_OK)
    except GymrayError as e:
        _say(f"error: {e}")
        return e.exit_code
