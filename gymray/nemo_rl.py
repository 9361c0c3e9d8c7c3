"""The NeMo RL contract: data config blocks, the config YAML gymray writes, the entrypoint.

Pure Python (OmegaConf and the standard library, no Ray) so it can be tested without a
cluster and without NeMo RL. The facts it encodes are in the NeMo RL contract
(entrypoints, `defaults:` loading, record shapes, the `data.validation` trap).

What gymray writes for a training run (RUN = `<dataset dir>/runs/<algo>-<hash12>` by default):

- `RUN/nemo_rl.base.yaml`: `defaults: <checkout>/<base config>` plus `data.train: null`
  and `data.validation: null`. NeMo RL merges nested mappings key by key and honours
  `_override_: true` only on top-level keys, so a plain `data.validation` block would keep
  the base config's hub `split: validation` (KeyError 'validation' at load). Nulling the
  two blocks one level up, then setting them in the child file, replaces them whole
  without gymray having to read (or copy) the rest of the base `data` section.
- `RUN/nemo_rl.yaml`: `defaults: RUN/nemo_rl.base.yaml`, then gymray's data section,
  then the template `configs/nemo_rl/<algo>.yaml`, then the user's `nemo_rl.*`
  overrides (merged with OmegaConf in that order, later wins). This is the `--config`.
- `<dataset dir>/nemo_rl.yaml`: a copy of the latest run's config, for people looking
  at the dataset (local dataset dirs only).

The run id is a hash of everything that decides what is trained (dataset fingerprint,
merged config, base config, script), so a second training with other hyperparameters on
the same dataset gets its own checkpoint dir instead of resuming the first one's
checkpoints, and rerunning the same step finds the same dir (and the same job).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gymray.config import ConfigError as SettingsError

ALGOS = ("sft", "dpo", "grpo")
FORMATS = {
    "sft": ("openai", "simple"),
    "dpo": ("preference", "binary"),
    "grpo": ("nemo_gym", "math"),
}

# Placeholders allowed in the templates (configs/nemo_rl/<algo>.yaml) and in user
# override values; replaced by plain text substitution so NeMo RL's own `${...}`
# interpolations pass through untouched.
PLACEHOLDERS = ("{run_dir}", "{run_id}", "{output}", "{algo}")

# Mappings whose keys depend on the dataset class, the environment or a backend, so NeMo
# RL's base config cannot list them all: new keys under these are allowed without `++`.
FREEFORM_PREFIXES = ("data.", "env.")
FREEFORM_SEGMENTS = ("vllm_kwargs", "env_vars", "wandb", "mlflow", "tensorboard", "swanlab")

BASE_FILE = "nemo_rl.base.yaml"
CONFIG_FILE = "nemo_rl.yaml"


class ConfigError(SettingsError):
    """A NeMo RL config or launch setting the user must fix; the message says what to do."""

    exit_code = 2


@dataclass(frozen=True)
class Recipe:
    """Which NeMo RL script runs an algorithm, and its default base config."""

    script: str
    base_config: str


def recipe(algo: str, fmt: str) -> Recipe:
    """The entrypoint script and base config (paths inside the checkout) for algo/format.

    >>> recipe("grpo", "math").script
    'examples/run_grpo.py'
    """
    _check_format(algo, fmt)
    if algo == "sft":
        return Recipe("examples/run_sft.py", "examples/configs/sft.yaml")
    if algo == "dpo":
        return Recipe("examples/run_dpo.py", "examples/configs/dpo.yaml")
    if fmt == "math":
        return Recipe("examples/run_grpo.py", "examples/configs/grpo_math_1B.yaml")
    return Recipe(
        "examples/nemo_gym/run_grpo_nemo_gym.py",
        "examples/nemo_gym/grpo_workplace_assistant_nemotron_nano_v2_9b.yaml",
    )


def _check_format(algo: str, fmt: str) -> None:
    if algo not in FORMATS:
        raise ConfigError(f"unknown algorithm {algo!r}: use one of {', '.join(ALGOS)}")
    if fmt not in FORMATS[algo]:
        raise ConfigError(
            f"record format {fmt!r} cannot be trained with {algo}: "
            f"{algo} takes {' or '.join(FORMATS[algo])}"
        )


def _dataset_block(algo: str, fmt: str, path: str, tools_differ: bool) -> dict[str, Any]:
    if fmt == "openai":
        return {
            "dataset_name": "openai_format",
            "data_path": path,
            "chat_key": "messages",
            "tool_key": "tools",
            # Without it, rows whose tool schemas differ get None for missing arguments.
            "use_preserving_dataset": bool(tools_differ),
        }
    if fmt == "simple":
        return {
            "dataset_name": "ResponseDataset",
            "data_path": path,
            "input_key": "input",
            "output_key": "output",
        }
    if fmt == "preference":
        return {"dataset_name": "PreferenceDataset", "data_path": path}
    if fmt == "binary":
        return {
            "dataset_name": "BinaryPreferenceDataset",
            "data_path": path,
            "prompt_key": "prompt",
            "chosen_key": "chosen",
            "rejected_key": "rejected",
        }
    if fmt == "math":
        return {
            "dataset_name": "ResponseDataset",
            "data_path": path,
            "input_key": "input",
            "output_key": "ground_truth",
        }
    # nemo_gym: dataset_name, env_name and processor come from data.default.
    return {"data_path": path}


def data_config(
    algo: str, fmt: str, train_path: str, val_path: str | None, tools_differ: bool
) -> dict[str, Any]:
    """The partial NeMo RL config that points NeMo RL at gymray's JSONL files.

    `train_path`/`val_path` should be absolute paths or URIs: NeMo RL runs from its
    checkout root, so a relative path would be read relative to that. `data.validation`
    is None when there is no val file; gymray's config writer makes both blocks replace
    the base config's blocks whole (see the module docstring).

    >>> data_config("sft", "openai", "/d/train.jsonl", None, False)["data"]["train"]["chat_key"]
    'messages'
    """
    _check_format(algo, fmt)
    data: dict[str, Any] = {
        "train": _dataset_block(algo, fmt, train_path, tools_differ),
        "validation": _dataset_block(algo, fmt, val_path, tools_differ) if val_path else None,
    }
    out: dict[str, Any] = {"data": data}
    if fmt == "nemo_gym":
        data["default"] = {
            "dataset_name": "NemoGymDataset",
            "env_name": "nemo_gym",
            "processor": "nemo_gym_data_processor",
        }
        out["env"] = {"should_use_nemo_gym": True}
    return out


# ---------------------------------------------------------------------------------------
# Loading NeMo RL configs (for the key check) the way NeMo RL does.


def load_with_defaults(path: str | Path) -> DictConfig:
    """Load a NeMo RL YAML resolving its `defaults:` chain like NeMo RL's loader.

    `defaults` is a string or list, each resolved relative to that YAML's own directory;
    later parents and then the child merge over earlier ones; a top-level mapping with
    `_override_: true` replaces the parent's mapping instead of merging into it.
    """
    return _load(Path(path), seen=())


def _load(path: Path, seen: tuple[Path, ...]) -> DictConfig:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"NeMo RL config defaults form a cycle: {chain}")
    if not path.is_file():
        where = f" (a default of {seen[-1]})" if seen else ""
        raise ConfigError(f"NeMo RL config {path}{where} does not exist")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"NeMo RL config {path} is not a mapping")
    if "defaults" not in cfg:
        return cfg
    defaults = cfg.pop("defaults")
    parents = [defaults] if isinstance(defaults, str) else list(defaults or [])
    base = OmegaConf.create({})
    for parent in parents:
        parent_path = Path(str(parent))
        if not parent_path.is_absolute():
            parent_path = path.parent / parent_path
        base = _merge_with_override(base, _load(parent_path, (*seen, path)))
    return _merge_with_override(base, cfg)


def _merge_with_override(base: DictConfig, child: DictConfig) -> DictConfig:
    for key in list(child.keys()):
        node = child[key]
        if isinstance(node, DictConfig) and node.get("_override_", False):
            node.pop("_override_")
            if key in base:
                base.pop(key)
    merged = OmegaConf.merge(base, child)
    assert isinstance(merged, DictConfig)
    return merged


# ---------------------------------------------------------------------------------------
# User overrides.


@dataclass(frozen=True)
class Override:
    """One user override: dotted key, value, and whether it may add a new key (`++`)."""

    key: str
    value: Any
    force: bool = False


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[Override]:
    """Normalise user overrides to a flat list of dotted keys.

    Accepts a nested dict (as OmegaConf builds from `nemo_rl.policy.lr=1e-5`), a flat
    dict with dotted keys, or a list of `key=value` strings (values parsed like OmegaConf's
    dotlist). A `++` at the start of any key segment (`++policy.new_key=1` or
    `policy.++new_key=1`) marks the key as deliberately new, as in NeMo RL's own CLI.
    `~key` (delete) is not supported: a YAML file cannot express it.
    """
    if not overrides:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, Mapping):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if item.startswith("~"):
                raise ConfigError(
                    f"NeMo RL override {item!r}: deleting keys is not supported; "
                    "set the key to null instead"
                )
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
            for seg in segments:
                if seg.startswith("++"):
                    seg_force, seg = True, seg[2:]
                elif seg.startswith("+"):
                    seg_force, seg = True, seg[1:]
                if seg.startswith("~"):
                    raise ConfigError(
                        f"NeMo RL override {key!r}: deleting keys is not supported; "
                        "set the key to null instead"
                    )
                if not seg:
                    raise ConfigError(f"NeMo RL override key {key!r} has an empty segment")
                clean.append(seg)
            _flatten(value, prefix + clean, seg_force, out)
        return
    if not prefix:
        raise ConfigError("NeMo RL overrides must be key=value pairs")
    out.append(Override(".".join(prefix), node, force))


def _overrides_to_dict(overrides: Iterable[Override]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for ov in overrides:
        node = root
        *parents, last = ov.key.split(".")
        for seg in parents:
            child = node.get(seg)
            if not isinstance(child, dict):
                child = node[seg] = {}
            node = child
        node[last] = ov.value
    return root


def _dotted_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted key in a plain config dict (mappings and leaves) with its value."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            out[dotted] = value
            out.update(_dotted_keys(value, dotted + "."))
    return out


def check_override_keys(overrides: Sequence[Override], known: DictConfig, source: str) -> list[str]:
    """Fail on a user key NeMo RL's config does not have, naming the closest existing key.

    A key is accepted when it exists in `known` (the resolved base config merged with
    gymray's blocks), when it is marked `++`, when it lies under a free-form mapping
    (FREEFORM_PREFIXES / FREEFORM_SEGMENTS), or when an existing ancestor is null or not
    a mapping (NeMo RL's pydantic model judges those). Returns the keys accepted as new.
    """
    plain = OmegaConf.to_container(known, resolve=False)
    keys = _dotted_keys(plain)
    new: list[str] = []
    for ov in overrides:
        if ov.key in keys:
            continue
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


# ---------------------------------------------------------------------------------------
# The config gymray writes.


@dataclass
class BuiltConfig:
    """Everything needed to write NeMo RL's config and launch it; see build_config."""

    algo: str
    run_id: str
    run_dir: str
    config_path: str
    base_path: str
    latest_path: str | None
    config_yaml: str
    base_yaml: str
    nemo_rl_dir: str
    script: str
    base_config: str
    entrypoint: str
    dataset: str
    fingerprint: str
    keys_checked: bool
    new_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """JSON-able description (no config text) for summaries and job metadata."""
        return {
            "algo": self.algo,
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "config_path": self.config_path,
            "nemo_rl_dir": self.nemo_rl_dir,
            "script": self.script,
            "base_config": self.base_config,
            "entrypoint": self.entrypoint,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "keys_checked": self.keys_checked,
            "new_keys": list(self.new_keys),
            "warnings": list(self.warnings),
        }


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _join(base: str, rel: str) -> str:
    if is_remote(rel) or os.path.isabs(rel):
        return rel
    return f"{base.rstrip('/')}/{rel}" if is_remote(base) else os.path.join(base, rel)


def templates_dir_default() -> Path:
    """`configs/nemo_rl` of the checkout, or of the copy a wheel installs."""
    from gymray.config import configs_dir

    return configs_dir() / "nemo_rl"


def load_template(algo: str, templates_dir: str | Path | None = None) -> dict[str, Any]:
    """The NeMo RL override template for an algorithm (`configs/nemo_rl/<algo>.yaml`)."""
    tdir = Path(templates_dir) if templates_dir else templates_dir_default()
    path = tdir / f"{algo}.yaml"
    if not path.is_file():
        if templates_dir:
            raise ConfigError(f"NeMo RL template {path} does not exist")
        # No configs/ found (e.g. installed with --target): keep results next to the
        # data all the same.
        return {
            "checkpointing": {"checkpoint_dir": "{run_dir}/checkpoints"},
            "logger": {"log_dir": "{run_dir}/logs"},
        }
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"NeMo RL template {path} is not a mapping")
    return loaded


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        for name, value in values.items():
            node = node.replace(name, value)
    return node


def _setting(job: Any, name: str, default: Any = None) -> Any:
    if job is None:
        return default
    if isinstance(job, Mapping):
        return job.get(name, default)
    return getattr(job, name, default)


def split_launcher(launcher: str) -> list[str]:
    """`uv run python`, `python` or an interpreter path (quote it if it has spaces)."""
    try:
        parts = shlex.split(launcher or "")
    except ValueError as e:
        raise ConfigError(f"job.launcher={launcher!r} cannot be parsed: {e}") from None
    if not parts:
        raise ConfigError("job.launcher is empty: use e.g. 'uv run python' or 'python'")
    return parts


def entrypoint_command(nemo_rl_dir: str, launcher: str, script: str, config_path: str) -> str:
    """`cd <checkout> && <launcher> <script> --config <config>`, every argument quoted.

    >>> entrypoint_command("/x y", "uv run python", "examples/run_sft.py", "/c;rm -rf ~")
    "cd '/x y' && uv run python examples/run_sft.py --config '/c;rm -rf ~'"
    """
    argv = [*split_launcher(launcher), script, "--config", config_path]
    return f"cd {shlex.quote(nemo_rl_dir)} && {shlex.join(argv)}"


def build_config(
    algo: str,
    manifest: Mapping[str, Any],
    job: Any = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    templates_dir: str | Path | None = None,
) -> BuiltConfig:
    """Build (without writing) the NeMo RL config and launch command for a dataset.

    `manifest` is the dataset's manifest.json (algo, output, fingerprint, format, files,
    tools_differ). `job` is a JobSettings (or a dict with the same names): nemo_rl_dir,
    launcher, base_config, script, runs_dir. Raises ConfigError on anything the user must
    fix, including a user key that NeMo RL's base config does not have (checked when the
    checkout is readable here; otherwise `keys_checked` is False and a warning says so).

    >>> built = build_config("sft", manifest, {"nemo_rl_dir": "/shared/nemo-rl"},
    ...                      {"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})  # doctest: +SKIP
    >>> write_config(built)  # doctest: +SKIP
    """
    if algo not in FORMATS:
        raise ConfigError(f"unknown algorithm {algo!r}: use one of {', '.join(ALGOS)}")
    missing = [k for k in ("output", "fingerprint", "format", "files") if not manifest.get(k)]
    if missing:
        raise ConfigError(
            f"dataset manifest lacks {', '.join(missing)}: prepare the dataset with gymray "
            "first (python -m gymray.run <algo> input=... output=... --prepare-only)"
        )
    if manifest.get("algo") and manifest["algo"] != algo:
        raise ConfigError(
            f"dataset {manifest['output']} was prepared for {manifest['algo']}, not {algo}"
        )
    fmt = str(manifest["format"])
    _check_format(algo, fmt)
    output = str(manifest["output"])
    fingerprint = str(manifest["fingerprint"])

    nemo_rl_dir = _setting(job, "nemo_rl_dir")
    if not nemo_rl_dir:
        raise ConfigError(
            "job.nemo_rl_dir is not set: pass job.nemo_rl_dir=<path of the NeMo RL "
            "checkout on the cluster nodes>"
        )
    if not os.path.isabs(nemo_rl_dir):
        raise ConfigError(
            f"job.nemo_rl_dir={nemo_rl_dir!r} must be an absolute path: the job runs "
            "elsewhere, from the cluster's own working directory"
        )
    nemo_rl_dir = os.path.normpath(nemo_rl_dir)
    rec = recipe(algo, fmt)
    script = _setting(job, "script") or rec.script
    base_config = _setting(job, "base_config") or rec.base_config
    base_abs = base_config if os.path.isabs(base_config) else os.path.join(nemo_rl_dir, base_config)
    launcher = _setting(job, "launcher") or "uv run python"
    split_launcher(launcher)

    files = manifest["files"]
    if not files.get("train"):
        raise ConfigError(f"dataset manifest of {output} names no train file")
    train_path = _join(output, files["train"])
    val_path = _join(output, files["val"]) if files.get("val") else None
    data = data_config(algo, fmt, train_path, val_path, bool(manifest.get("tools_differ")))

    runs_dir = _setting(job, "runs_dir")
    if not runs_dir:
        if is_remote(output):
            raise ConfigError(
                f"dataset {output} is in an object store, which NeMo RL cannot read its "
                "config from or write checkpoints to: set job.runs_dir=<shared directory "
                "the cluster nodes can read and write>"
            )
        runs_dir = os.path.join(_local(output), "runs")
    if is_remote(runs_dir) or not os.path.isabs(_local(runs_dir)):
        raise ConfigError(f"job.runs_dir={runs_dir!r} must be an absolute shared path")
    runs_dir = _local(runs_dir)

    template = load_template(algo, templates_dir)
    user = parse_overrides(overrides)
    merged = OmegaConf.merge(data, template, _overrides_to_dict(user))
    merged_plain = OmegaConf.to_container(merged)
    assert isinstance(merged_plain, dict)

    run_key = {
        "algo": algo,
        "fingerprint": fingerprint,
        "output": output,
        "runs_dir": runs_dir,
        "nemo_rl_dir": nemo_rl_dir,
        "script": script,
        "base_config": base_config,
        "config": merged_plain,
    }
    digest = hashlib.sha256(json.dumps(run_key, sort_keys=True, default=str).encode())
    run_id = f"{algo}-{digest.hexdigest()[:12]}"
    run_dir = os.path.join(runs_dir, run_id)
    final = _substitute(
        merged_plain,
        {"{run_dir}": run_dir, "{run_id}": run_id, "{output}": output, "{algo}": algo},
    )

    warnings: list[str] = []
    keys_checked = False
    new_keys: list[str] = []
    if os.path.isdir(nemo_rl_dir):
        if not os.path.isfile(os.path.join(nemo_rl_dir, script)):
            raise ConfigError(
                f"NeMo RL entrypoint {script} not found in job.nemo_rl_dir={nemo_rl_dir}: "
                "is that a NeMo RL checkout (or set job.script)?"
            )
        base = load_with_defaults(base_abs)
        reset = OmegaConf.create({"data": {"train": None, "validation": None}})
        ours = OmegaConf.merge(base, reset, data, template)
        assert isinstance(ours, DictConfig)
        new_keys = check_override_keys(user, ours, f"{base_config} (with its defaults)")
        keys_checked = True
    else:
        warnings.append(
            f"NeMo RL checkout {nemo_rl_dir} is not readable here: nemo_rl.* keys were not "
            "checked (NeMo RL will reject unknown keys when the job starts)"
        )

    base_path = os.path.join(run_dir, BASE_FILE)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    header = (
        f"# Written by gymray for run {run_id} (dataset {output}, fingerprint "
        f"{fingerprint}).\n# Launched as: "
        f"{entrypoint_command(nemo_rl_dir, launcher, script, config_path)}\n"
    )
    base_yaml = (
        f"# Written by gymray: NeMo RL's {base_config} with the data blocks gymray "
        "replaces\n# cleared first, because NeMo RL merges nested mappings key by key.\n"
        + OmegaConf.to_yaml(
            OmegaConf.create({"defaults": base_abs, "data": {"train": None, "validation": None}})
        )
    )
    config_yaml = header + OmegaConf.to_yaml(OmegaConf.create({"defaults": base_path, **final}))
    latest = None if is_remote(output) else os.path.join(_local(output), CONFIG_FILE)
    return BuiltConfig(
        algo=algo,
        run_id=run_id,
        run_dir=run_dir,
        config_path=config_path,
        base_path=base_path,
        latest_path=latest,
        config_yaml=config_yaml,
        base_yaml=base_yaml,
        nemo_rl_dir=nemo_rl_dir,
        script=script,
        base_config=base_config,
        entrypoint=entrypoint_command(nemo_rl_dir, launcher, script, config_path),
        dataset=output,
        fingerprint=fingerprint,
        keys_checked=keys_checked,
        new_keys=new_keys,
        warnings=warnings,
    )


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_config(built: BuiltConfig) -> str:
    """Write the run's base and config YAMLs (and the dataset's latest copy); return --config."""
    _atomic_write(built.base_path, built.base_yaml)
    _atomic_write(built.config_path, built.config_yaml)
    if built.latest_path:
        _atomic_write(built.latest_path, built.config_yaml)
    return built.config_path
