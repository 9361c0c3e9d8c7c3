"""The command line: ``python -m gymray.run <algo> [key=value ...]`` and the other verbs.

    python -m gymray.run sft input=rollouts/ output=/shared/ds/sft --prepare-only
    python -m gymray.run dpo input=s3://b/r/ output=/shared/ds/dpo job.nemo_rl_dir=/shared/nemo-rl
    python -m gymray.run inspect /shared/ds/dpo
    python -m gymray.run status|logs|stop SUBMISSION_ID

A skin over :mod:`gymray.api`: it parses, calls the API, prints, and turns every
outcome into an exit code (:mod:`gymray.errors`). Every failure ends in one
``gymray: error:`` line saying what, where and what to do; the traceback goes to a
log file that line names. ``--json`` prints one JSON object of one shape for
every verb and outcome, errors included.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import IO, Any

from omegaconf import OmegaConf

import gymray
from gymray import api
from gymray.config import help_rows, load_settings
from gymray.errors import (
    EXIT_CODES,
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    GymrayError,
    Interrupted,
    classify,
    finished,
    signals_raise,
)
from gymray.inspect import render_dataset
from gymray.jobs.handle import STATUS_EXIT, JobHandle, attach
from gymray.jobs.submit import stop_and_wait
from gymray.recipes import ALGOS, REGISTRY
from gymray.runlog import close_log, file_log, run_log, stderr_log

JOB_VERBS = ("status", "logs", "stop")
DATASET_VERBS = ("inspect", "show")
VERBS = (*ALGOS, *DATASET_VERBS, *JOB_VERBS)
log = logging.getLogger("gymray")

USAGE = f"""\
usage: python -m gymray.run {{{",".join(ALGOS)}}} [key=value ...] [--config FILE]... [--prepare-only]
                            [--dry-run] [--no-wait] [--json] [--print-settings] [--help]
       python -m gymray.run {{inspect,show}} DATASET_DIR [--examples N] [--json]
       python -m gymray.run {{status,logs,stop}} SUBMISSION_ID [--address URL] [--follow] [--json]
       python -m gymray.run --version

key=value settings are OmegaConf dotlist keys, in NeMo RL's grammar: key=value sets,
++key=value sets or adds, ~key removes (back to the default; for nemo_rl.* keys, from
NeMo RL's config). --config files may start with `defaults: other.yaml`.
precedence: defaults < configs/<algo>.yaml < --config files < key=value
`python -m gymray.run <algo> --help` lists every setting with its default.
"""


# --------------------------------------------------------------------------- entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    verb, rest = argv[0], argv[1:]
    if verb in ("-h", "--help"):
        print(USAGE + _exit_codes())
        return EXIT_OK
    if verb == "--version":
        print(f"gymray {gymray.__version__}")
        return EXIT_OK
    json_output = wants_json(argv)
    if verb in JOB_VERBS:
        return guarded(lambda: job_verb(verb, rest), verb, None, json_output)
    if verb in DATASET_VERBS:
        return guarded(lambda: inspect_verb(verb, rest), verb, None, json_output)
    if verb in ALGOS:
        return guarded(lambda: algo_verb(verb, rest), "prepare", verb, json_output)
    close = difflib.get_close_matches(verb, VERBS, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    _say(f"error: unknown command '{verb}'{hint} (choose one of {', '.join(VERBS)})")
    return EXIT_USAGE


def wants_json(argv: list[str]) -> bool:
    """Whether a command line (verb first) asks for ``--json``."""
    return "--json" in argv[1:]


def _say(msg: str) -> None:
    print(f"gymray: {msg}", file=sys.stderr, flush=True)


def _exit_codes() -> str:
    return "\nexit codes:\n" + "".join(f"  {c}  {text}\n" for c, text in EXIT_CODES.items())


# --------------------------------------------------------------------------- errors
def guarded(fn: Callable[[], int], command: str, algo: str | None, json_output: bool) -> int:
    """Run a verb; whatever it raises ends as one line (and one JSON object) and a code."""
    stderr_log()
    handler = file_log()
    logfile = handler.baseFilename if handler is not None else None
    code = None  # (until known: the log is kept)
    try:
        with json_stdout(json_output), signals_raise():
            code = fn()
        return code
    except BaseException as e:  # every failure, whatever raised it
        error = classify(e)
        if logfile is not None:  # the traceback goes to the log file only
            with open(logfile, "a", encoding="utf-8") as f:
                f.write("".join(traceback.format_exception(e)))
        where = f" (details in {logfile})" if logfile is not None and not error.expected else ""
        _say(f"error: {error.message}{where}")
        if json_output:
            emit(command, algo, error.exit_code, error={
                "type": error.kind, "message": error.message, "exit_code": error.exit_code,
                "log": logfile,
            })  # fmt: skip
        code = error.exit_code
        return code
    finally:
        close_log(handler, code)


# --------------------------------------------------------------------------- json
_json_out: IO[str] | None = None  # the real stdout, while json_stdout holds it


@contextmanager
def json_stdout(json_output: bool):
    """With ``--json``, stdout holds the one JSON object and nothing else: while the
    verb runs, what else writes to ``sys.stdout`` goes to stderr, and :func:`emit`
    writes to the real stdout. Ray prints the raylet's warnings to ``sys.stdout`` from a
    thread of the driver: a DPO 1M run on a 16-CPU head wrote "(raylet) WARNING: 9
    PYTHON worker processes have been started ..." into the JSON. A no-op when already
    held (``gymray.run`` holds it until Ray is disconnected, after the verb)."""
    global _json_out
    if not json_output or _json_out is not None:
        yield
        return
    _json_out, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout, _json_out = _json_out, None


def emit(command: str, algo: str | None, exit_code: int, **parts: Any) -> None:
    """The one --json shape: every verb, success or not."""
    out = {
        "gymray": gymray.__version__,
        "command": command,
        "algo": algo,
        "ok": exit_code == EXIT_OK,
        "exit_code": exit_code,
        "error": None,
        "dataset": None,
        "job": None,
        **parts,
    }
    print(json.dumps(out, indent=2, default=str), file=_json_out or sys.stdout, flush=True)


def dataset_json(result: api.PrepareResult) -> dict:
    files = result.manifest["files"]
    paths = dict(result.paths)
    paths.setdefault("val", None)  # always present, null when the dataset has no val split
    return {
        "output": result.output,
        "reused": result.reused,
        "fingerprint": result.fingerprint,
        "format": result.manifest.get("format"),
        "paths": paths,
        "files": files,
        "counts": result.counts,
        "warnings": result.manifest.get("warnings", []),
    }


# --------------------------------------------------------------------------- prepare
def _parser(algo: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m gymray.run {algo}", add_help=False)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--print-settings", "--cfg", action="store_true", dest="print_settings")
    p.add_argument("-h", "--help", action="store_true")
    return p


def settings_help(algo: str) -> str:
    """Every setting of ``algo``, its default and meaning (from the settings models)."""
    lines = [f"usage: python -m gymray.run {algo} [key=value ...] [flags]", "",
             f"{algo}: {REGISTRY[algo].help}", "", "flags:",
             "  --config FILE       a YAML settings file (repeatable; may use defaults:)",
             "  --prepare-only      write the dataset and stop",
             "  --dry-run           prepare, write and print the NeMo RL config, submit nothing",
             "  --no-wait           return once the training job is submitted",
             "  --json              one JSON object on stdout (errors too)",
             "  --print-settings    print the merged settings and stop", "",
             "settings (key=default: meaning):"]  # fmt: skip
    for key, default, description in help_rows(algo):
        lines.append(f"  {key}={default}")
        if description:
            lines.append(f"      {description}")
    return "\n".join(lines) + "\n" + _exit_codes()


def algo_verb(algo: str, argv: Sequence[str]) -> int:
    parser = _parser(algo)
    try:
        args, unknown = parser.parse_known_intermixed_args(list(argv))
    except SystemExit:
        raise GymrayError(f"cannot parse the arguments of {algo}: see --help") from None
    if args.help:
        print(settings_help(algo))
        return EXIT_OK
    flags = [u for u in unknown if u.startswith("--")]
    if flags:
        known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        close = difflib.get_close_matches(flags[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise GymrayError(f"unknown flag {flags[0]}{hint}")
    settings = load_settings(algo, [*args.overrides, *unknown], args.config)
    if args.print_settings:
        print(OmegaConf.to_yaml(OmegaConf.create(settings.model_dump(mode="json"))), end="")
        return EXIT_OK
    if not args.prepare_only:
        api.check_launch(settings, dry_run=args.dry_run)  # before the prepare
    result = api.prepare(settings=settings)
    empty = not result.counts["records"]["train"] and not settings.allow_empty
    last = args.prepare_only or empty  # no launch follows
    if last:
        finished()  # the dataset is published: what is left is to say so
    _print_prepare(result)
    if last:
        code, error = EXIT_OK, None
        if empty:
            message = ("no training records were written (report.md says why); "
                       "set allow_empty=true to accept an empty dataset")  # fmt: skip
            _say(f"error: {message}")
            code = EXIT_EMPTY
            error = {"type": "EmptyDatasetError", "message": message, "exit_code": code,
                     "log": run_log()}  # fmt: skip
        if args.json:
            emit("prepare", algo, code, dataset=dataset_json(result), error=error)
        return code
    handle = api.submit(result, dry_run=args.dry_run)
    return follow(
        handle, wait=not args.no_wait and not args.dry_run, json_output=args.json,
        dataset=dataset_json(result), algo=algo,
    )  # fmt: skip


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
    # why lines were not used, not only how many
    for kind, listing in (("filtered", "filtered.jsonl"), ("rejected", "rejects.jsonl")):
        for reason, n in sorted(c[kind].items(), key=lambda kv: -kv[1]):
            _say(f"  {kind} {n} x {reason} (see {listing})")
    report = result.paths.get("report_html") or result.paths.get("report")
    _say(f"report: {report}")


# --------------------------------------------------------------------------- follow
def follow(
    handle: JobHandle,
    *,
    wait: bool = True,
    json_output: bool = False,
    stream: IO[str] | None = None,
    dataset: dict | None = None,
    algo: str | None = None,
) -> int:
    """Report a submitted job and, with `wait`, stream its logs until it ends.

    Returns the exit code. Human messages go to stderr prefixed `gymray:`; logs go to
    stdout (to stderr with `json_output`, whose stdout is one JSON object). SIGTERM or
    Ctrl-C while following stops the job.
    """
    logs = stream or (sys.stderr if json_output else sys.stdout)
    command = "dry-run" if handle.dry_run else "train"

    def done(code: int, include_config: bool = False) -> int:
        if json_output:
            job = handle.summary(include_config=include_config)
            emit(command, algo or handle.algo, code, dataset=dataset, job=job)
        return code

    for w in handle.warnings:
        _say(f"warning: {w}")
    if handle.dry_run:
        if not json_output:
            _print_dry_run(handle, sys.stdout)
        return done(EXIT_OK, include_config=True)
    if handle.attached:
        status = handle.status()
        if status in ("FAILED", "STOPPED"):
            _say(
                f"job {handle.submission_id} already {status}; not training again. "
                "Rerun with job.on_failed=retry (or a new job.submission_id) to retry"
            )
            return done(STATUS_EXIT[status])
    else:
        _say(f"submitted job {handle.submission_id}")
    if not wait:
        if not json_output:
            print(handle.submission_id, flush=True)
        return done(EXIT_OK)
    try:
        with signals_raise():  # also when called as a library, not through main()
            status = handle.wait(follow_logs=True, stream=logs)
    except Interrupted as sig:
        _say(f"{sig.signal_name}: stopping job {handle.submission_id}")
        try:
            status = stop_and_wait(handle)
        except Interrupted:
            _say(f"not waiting for job {handle.submission_id} to stop")
            return done(EXIT_STOPPED)
    except TimeoutError as e:
        _say(f"{e}; it keeps running (gymray.run stop {handle.submission_id})")
        return done(EXIT_TIMEOUT)
    _say(f"job {handle.submission_id} {status}")
    return done(STATUS_EXIT.get(status, EXIT_FAILED))


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


# --------------------------------------------------------------------------- other verbs
def inspect_verb(verb: str, argv: Sequence[str]) -> int:
    """`inspect DATASET_DIR`: counts, the per-environment table, a few records as conversations."""
    p = argparse.ArgumentParser(prog=f"python -m gymray.run {verb}")
    p.add_argument("dataset")
    p.add_argument("--examples", type=int, default=2)
    p.add_argument("--json", action="store_true")
    try:
        args = p.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    ds = api.load(args.dataset)
    if args.json:
        emit(verb, ds.manifest.get("algo"), EXIT_OK, dataset=dataset_json(ds))
    else:
        print(render_dataset(ds, examples=args.examples), end="")
    return EXIT_OK


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
    if verb != "stop":
        parser.add_argument("--follow", action="store_true", help="stream logs until the end")
    if verb not in JOB_VERBS:
        _say(f"error: unknown job verb {verb!r}: use status, logs or stop")
        return EXIT_USAGE
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    handle = attach(args.submission_id, args.address)
    if getattr(args, "follow", False):
        return _follow_existing(handle, args.json, verb)
    if verb == "stop":
        was_running = handle.stop()
        status = stop_and_wait(handle) if was_running else handle.status()
        _say(f"job {handle.submission_id} {status}")
        if args.json:
            emit(verb, handle.algo or None, EXIT_OK, job=handle.summary())
        return EXIT_OK
    if verb == "logs":
        text = handle.logs()
        if args.json:
            emit(verb, handle.algo or None, EXIT_OK, job={**handle.summary(), "logs": text})
        else:
            sys.stdout.write(text)
        return EXIT_OK
    summary = handle.summary()
    code = STATUS_EXIT.get(summary["status"], EXIT_OK)
    if args.json:
        emit(verb, handle.algo or None, code, job=summary)
    else:
        msg = f" ({summary['message']})" if summary.get("message") else ""
        print(f"{handle.submission_id} {summary['status']}{msg}")
    return code


def _follow_existing(handle: JobHandle, json_output: bool, verb: str) -> int:
    # Following an existing job (not one we submitted): Ctrl-C only detaches.
    try:
        with signals_raise():  # as when following a job we submitted
            status = handle.wait(follow_logs=True, stream=sys.stderr if json_output else sys.stdout)
    except (KeyboardInterrupt, Interrupted):
        _say(f"detached; job {handle.submission_id} keeps running")
        return EXIT_OK
    code = STATUS_EXIT.get(status, EXIT_FAILED)
    if json_output:
        emit(verb, handle.algo or None, code, job=handle.summary())
    _say(f"job {handle.submission_id} {status}")
    return code


__all__ = ["follow", "job_verb", "main"]
