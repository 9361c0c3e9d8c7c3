"""From a prepared dataset to a NeMo RL Ray Job: the glue between prepare and jobs."""

from __future__ import annotations

import sys
from typing import Any

from gymray.config import ConfigError, Settings
from gymray.storage import StorageError, is_remote, local_dataset_path, read_manifest

EXIT_USAGE = 2


def training_manifest(output: str, manifest: dict, settings: Settings) -> dict:
    """The manifest NeMo RL's paths come from: NeMo RL opens local paths only, so a
    dataset on an object store is materialized to ``storage.materialize_to``."""
    if not is_remote(output):
        return manifest
    local = local_dataset_path(output, settings.storage.materialize_to, settings.storage)
    return read_manifest(local) or manifest


def submit(prepared, settings: Settings, *, dry_run: bool = False):
    """Submit NeMo RL training for ``prepared`` (a :class:`gymray.api.PrepareResult`)."""
    from gymray.jobs import submit_training

    manifest = training_manifest(prepared.output, prepared.manifest, settings)
    return submit_training(settings.algo, manifest, settings.job, settings.nemo_rl, dry_run=dry_run)


def launch_from_cli(
    settings: Settings,
    prepared,
    summary: dict[str, Any],
    *,
    dry_run: bool,
    wait: bool,
    json_output: bool,
) -> int:
    from gymray.jobs import JobError, follow

    try:
        handle = submit(prepared, settings, dry_run=dry_run)
    except (ConfigError, StorageError, JobError) as e:
        print(f"gymray: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_USAGE)
    return follow(
        handle, wait=wait and not dry_run, json_output=json_output, extra={"prepare": summary}
    )
