"""User overrides of NeMo RL's config, in NeMo RL's own grammar, checked against its keys."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gymray.errors import ConfigError

# Mappings whose keys depend on the dataset class, the environment or a backend, so NeMo
# RL's base config cannot list them all: new keys under these are allowed without `++`.
FREEFORM_PREFIXES = ("data.", "env.")
FREEFORM_SEGMENTS = ("vllm_kwargs", "env_vars", "wandb", "mlflow", "tensorboard", "swanlab")


@dataclass(frozen=True)
class Override:
    """One user override: dotted key, value, whether it may add a new key (`++`), and
    whether it removes the key from NeMo RL's config (`~`)."""

    key: str
    value: Any
    force: bool = False
    remove: bool = False


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[Override]:
    """Normalise user overrides to a flat list of dotted keys.

    Accepts a nested dict (as OmegaConf builds from `nemo_rl.policy.lr=1e-5`), a flat
    dict with dotted keys, or a list of `key=value` strings (values parsed like OmegaConf's
    dotlist). A `++` at the start of any key segment (`++policy.new_key=1` or
    `policy.++new_key=1`) marks the key as deliberately new, as in NeMo RL's own CLI;
    `~key` removes a key (NeMo RL applies it as a command-line override: YAML cannot).
    """
    if not overrides:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, Mapping):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if item.startswith("~"):
                parsed[item] = None
                continue
            if "=" not in item:
                raise ConfigError(f"NeMo RL override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]))["v"]
            parsed[key] = value
        overrides = parsed
    out: list[Override] = []
    _flatten(overrides, [], False, out)
    return out


def _flatten(node: Any, prefix: list[str], force: bool, out: list[Override]) -> None:
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node)
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            segments = str(key).split(".")
            seg_force = force
            clean = []
            remove = False
            for seg in segments:
                if seg.startswith("++"):
                    seg_force, seg = True, seg[2:]
                elif seg.startswith("+"):
                    seg_force, seg = True, seg[1:]
                if seg.startswith("~"):
                    remove, seg = True, seg[1:]
                if not seg:
                    raise ConfigError(f"NeMo RL override key {key!r} has an empty segment")
                clean.append(seg)
            if remove:
                out.append(Override(".".join(prefix + clean), None, remove=True))
                continue
            _flatten(value, prefix + clean, seg_force, out)
        return
    if not prefix:
        raise ConfigError("NeMo RL overrides must be key=value pairs")
    out.append(Override(".".join(prefix), node, force))


def overrides_to_dict(overrides: Iterable[Override]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for ov in overrides:
        if ov.remove:
            continue
        node = root
        *parents, last = ov.key.split(".")
        for seg in parents:
            child = node.get(seg)
            if not isinstance(child, dict):
                child = node[seg] = {}
            node = child
        node[last] = ov.value
    return root


def dotted_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted key in a plain config dict (mappings and leaves) with its value."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            out[dotted] = value
            out.update(dotted_keys(value, dotted + "."))
    return out


def check_override_keys(overrides: Sequence[Override], known: DictConfig, source: str) -> list[str]:
    """Fail on a user key NeMo RL's config does not have, naming the closest existing key.

    A key is accepted when it exists in `known` (the resolved base config merged with
    gymray's blocks), when it is marked `++`, when it lies under a free-form mapping
    (FREEFORM_PREFIXES / FREEFORM_SEGMENTS), or when an existing ancestor is null or not
    a mapping (NeMo RL's pydantic model judges those). Returns the keys accepted as new.
    """
    plain = OmegaConf.to_container(known, resolve=False)
    keys = dotted_keys(plain)
    new: list[str] = []
    for ov in overrides:
        if ov.key in keys:
            problem = None if ov.remove else _wrong_type(ov.key, keys[ov.key], ov.value, source)
            if problem:
                raise ConfigError(f"nemo_rl.{ov.key} {problem}")
            continue
        if ov.remove:
            raise ConfigError(f"cannot remove nemo_rl.{ov.key}: it is not in {source}")
        segments = ov.key.split(".")
        ancestors = [".".join(segments[:i]) for i in range(len(segments) - 1, 0, -1)]
        nearest = next((a for a in ancestors if a in keys), None)
        if (
            ov.force
            or any(ov.key.startswith(p) for p in FREEFORM_PREFIXES)
            or any(seg in FREEFORM_SEGMENTS for seg in segments[:-1])
            # Under a null or scalar ancestor NeMo RL's own validation decides.
            or (nearest is not None and not isinstance(keys[nearest], dict))
        ):
            new.append(ov.key)
            continue
        close = difflib.get_close_matches(ov.key, list(keys), n=1, cutoff=0.6)
        hint = f"did you mean nemo_rl.{close[0]}? " if close else ""
        raise ConfigError(
            f"unknown NeMo RL key nemo_rl.{ov.key}: it is not in {source}. {hint}"
            f"To add a new key on purpose, write nemo_rl.++{ov.key}=..."
        )
    return new


def _wrong_type(key: str, base: Any, value: Any, source: str) -> str | None:
    """Why ``value`` cannot stand where NeMo RL's config has ``base`` (None: it can).
    Only what is surely wrong: text for a number or a flag, a value for a whole section;
    an interpolation or a null on either side is left to NeMo RL."""
    if (
        value is None
        or base is None
        or any(isinstance(v, str) and "${" in v for v in (base, value))
    ):
        return None
    if isinstance(base, dict) and base and not isinstance(value, dict):
        shown = ", ".join(list(base)[:3]) + (", ..." if len(base) > 3 else "")
        return f"is a section ({shown}): set its keys, e.g. nemo_rl.{key}.{next(iter(base))}=..."
    if isinstance(base, bool):
        ok, takes = isinstance(value, bool), "true or false"
    elif isinstance(base, int | float):
        ok, takes = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        return None
    return None if ok else f"takes {takes} ({base!r} in {source}), got {value!r}"
