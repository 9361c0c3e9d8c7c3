"""The command line: ``python -m gymray.run {grpo,sft,dpo} [key=value ...]``.

    python -m gymray.run sft input=rollouts/ output=/shared/ds/sft --prepare-only
    python -m gymray.run dpo input=s3://b/r/ output=/shared/ds/dpo job.nemo_rl_dir=/shared/nemo-rl
    python -m gymray.run status|logs|stop SUBMISSION_ID

A thin skin over :mod:`gymray.api`: it parses, loads settings, calls the API and
turns the outcome into an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from gymray.config import ALGOS, ConfigError, load_settings
from gymray.storage import StorageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
JOB_VERBS = ("status", "logs", "stop")

USAGE = """\
usage: python -m gymray.run {grpo,sft,dpo} [key=value ...] [--config FILE]... [--prepare-only]
                            [--dry-run] [--no-wait] [--json]
       python -m gymray.run {status,logs,stop} SUBMISSION_ID [--address URL] [--json]

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
        from gymray.jobs import cli

        return cli(argv[0], argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    args = _parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="gymray: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(args.algo, args.overrides, args.config)
        from gymray.api import prepare

        result = prepare(settings=settings)
    except (ConfigError, StorageError) as e:
        print(f"gymray: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NotImplementedError as e:
        print(f"gymray: {e}", file=sys.stderr)
        return EXIT_USAGE
    summary = {"algo": args.algo, **result.summary()}
    _print_prepare(result)
    if args.prepare_only:
        if args.json:
            print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    from gymray.launch import launch_from_cli

    return launch_from_cli(
        settings,
        result,
        summary,
        dry_run=args.dry_run,
        wait=not args.no_wait,
        json_output=args.json,
    )


def _print_prepare(result) -> None:
    c = result.counts
    verb = "reused" if result.reused else "wrote"
    filtered = sum(c["filtered"].values())
    rejected = sum(c["rejected"].values())
    print(
        f"gymray: {verb} {result.output}: {c['records']['train']} train / {c['records']['val']} val records "
        f"from {c['input_lines']} lines (used {c['used']}, filtered {filtered}, rejected {rejected})",
        file=sys.stderr,
    )
    for reason, n in sorted({**c["rejected"]}.items(), key=lambda kv: -kv[1]):
        print(f"gymray:   rejected {n} x {reason} (see rejects.jsonl)", file=sys.stderr)
    for w in result.manifest.get("warnings", []):
        print(f"gymray: warning: {w}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
