"""Submit a gymray job spec (jobs/<algo>.json) to a Ray cluster, optionally following it.

    python jobs/submit.py jobs/dpo.json [key=value ...] [--address http://head:8265]
        [--submission-id ID] [--follow]

`${VAR}` and `${VAR:-default}` in the spec's entrypoint come from the environment, each
value shell-quoted; extra key=value arguments are appended (quoted) to the gymray command.
Uses gymray's client, so the Ray auth token is sent from RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token. Exit codes are gymray.jobs's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from gymray import cli, jobs
from gymray.errors import EXIT_OK, JobError

FIELDS = (
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "runtime_env",
    "metadata",
)


def render(spec: dict, extra: list[str]) -> dict:
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(3)
        value = os.environ.get(name) or default
        if value is None:
            raise SystemExit(f"jobs/submit.py: set {name} (used by the spec's entrypoint)")
        return shlex.quote(value)

    entrypoint = re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, spec["entrypoint"])
    entrypoint = " ".join([entrypoint, *map(shlex.quote, extra)])
    return {"entrypoint": entrypoint, **{k: spec[k] for k in FIELDS if k in spec}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*", help="extra gymray key=value arguments")
    p.add_argument("--address", default=None)
    p.add_argument("--submission-id", default=None)
    p.add_argument("--follow", action="store_true", help="stream logs until the job ends")
    args = p.parse_args(argv)
    with open(args.spec) as f:
        request = render(json.load(f), args.overrides)
    try:
        client = jobs.connect(args.address)
        sid = client.submit_job(submission_id=args.submission_id, **request)
    except JobError as e:
        print(f"gymray: error: {e}", file=sys.stderr)
        return e.exit_code
    print(sid, flush=True)
    if not args.follow:
        return EXIT_OK
    return cli.job_verb(
        "logs", [sid, "--follow", *(["--address", args.address] if args.address else [])]
    )


if __name__ == "__main__":
    sys.exit(main())
