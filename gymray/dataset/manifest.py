"""``manifest.json``: what a dataset is made of, and whether a rerun can reuse it.

The fingerprint is a hash of the inputs (URI, size, mtime), the task files and the
settings that change records; the same fingerprint in an output means the same
dataset, so a rerun reuses it instead of writing it again.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
from typing import Any

import orjson
import pyarrow
import ray

import gymray
from gymray.errors import StorageError
from gymray.nemo_rl.overrides import dotted_keys
from gymray.storage import MANIFEST, InputFile, join, refuse_unless_replaceable

log = logging.getLogger("gymray")


def fingerprint(settings: Any, inputs: list[InputFile], tasks: list[InputFile]) -> str:
    body = {
        "inputs": [f.key() for f in inputs],
        "tasks": [f.key() for f in tasks],
        "settings": settings.fingerprint_settings(),
        "gymray": gymray.__version__,
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def reusable(
    settings: Any, fp: str, inputs: list[InputFile] = (), tasks: list[InputFile] = ()
) -> dict | None:
    """The manifest to reuse, or None to (re)build; refuses to clobber by accident,
    and refuses whatever is not a gymray dataset even with ``overwrite=true``."""
    state, existing = refuse_unless_replaceable(
        settings.output, settings.storage, settings.overwrite
    )
    if state == "dataset":
        if existing.get("fingerprint") == fp and not settings.overwrite:
            return existing
        if not settings.overwrite:
            why = differences(existing, settings, inputs, tasks)
            why.append(f"fingerprint {existing.get('fingerprint')} != {fp}")
            raise StorageError(
                f"{settings.output} holds a dataset built from other inputs or settings "
                f"({'; '.join(why)}); set overwrite=true to replace it, or choose another output"
            )
        return None
    if state == "unfinished":
        log.info(
            "%s holds the leftovers of an unfinished gymray run (no %s): replacing them",
            settings.output,
            MANIFEST,
        )
    return None


def differences(
    existing: dict, settings: Any, inputs: list[InputFile], tasks: list[InputFile]
) -> list[str]:
    """What a dataset's manifest and this run differ in, of what makes the fingerprint:
    the settings that change records (``split.val_fraction 0.05 -> 0.5``), input and task
    files added, gone or changed since, gymray's version."""
    kept = settings.fingerprint_settings()
    recorded = {k: v for k, v in (existing.get("settings") or {}).items() if k in kept}
    new = _leaves(kept)
    old = _leaves(recorded) if recorded else new  # (a manifest without settings: unknown)
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k, "-") != new.get(k, "-")]
    out = [f"{k} {_short(old.get(k, '-'))} -> {_short(new.get(k, '-'))}" for k in changed[:3]]
    if len(changed) > 3:
        out.append(f"{len(changed) - 3} more setting(s)")
    for name, before, now in (("input", existing.get("inputs"), inputs),
                              ("task", existing.get("tasks_files"), tasks)):  # fmt: skip
        if before is None:
            continue
        was = {f["uri"]: (f["size"], f["mtime_ns"]) for f in before}
        is_ = {f.uri: (f.size, f.mtime_ns) for f in now}
        counts = (
            (len(is_.keys() - was.keys()), "new"),
            (len(was.keys() - is_.keys()), "gone"),
            (sum(is_[u] != was[u] for u in is_.keys() & was.keys()), "changed since"),
        )
        out += [f"{n} {name} file(s) {what}" for n, what in counts if n]
    version = (existing.get("versions") or {}).get("gymray")
    if version and version != gymray.__version__:
        out.append(f"gymray {version} -> {gymray.__version__}")
    return out


def _leaves(tree: dict) -> dict:
    """The dotted keys of ``tree`` that hold a value, not a section: ``{"split.seed": 0}``."""
    return {k: v for k, v in dotted_keys(tree).items() if not (isinstance(v, dict) and v)}


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else f"{text[:37]}..."


def paths(manifest: dict) -> dict:
    """Absolute paths (or URIs) of a dataset's files."""
    out = manifest["output"]
    files = manifest["files"]
    p = {k: join(out, v) for k, v in files.items() if isinstance(v, str)}
    p["manifest"] = join(out, MANIFEST)
    p["parquet"] = {s: [join(out, f) for f in fs] for s, fs in files["parquet"].items()}
    return p


def described(files: list[InputFile]) -> list[dict]:
    return [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in files]


def versions() -> dict:
    return {
        "gymray": gymray.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
        "omegaconf": _version("omegaconf"),
        "python": platform.python_version(),
    }


def _version(mod: str) -> str:
    module = sys.modules.get(mod)
    return getattr(module, "__version__", "unknown") if module else "unknown"


def recorded_settings(settings: Any) -> dict:
    """Settings as recorded: secret values never leave the process."""
    d = settings.model_dump(mode="json")
    job = d.get("job") or {}
    if isinstance(job.get("env_vars"), dict):
        job["env_vars"] = {k: "<redacted>" for k in job["env_vars"]}
    return d
