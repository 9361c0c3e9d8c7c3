"""The NeMo RL config gymray writes for a training run, and the command that runs it.

Pure Python (OmegaConf and the standard library, no Ray). The record formats and their
dataset blocks are in :mod:`gymray.formats`, each algorithm's entrypoint in its recipe.

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

import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from gymray import formats
from gymray.config import configs_dir
from gymray.errors import ConfigError
from gymray.nemo_rl import checks, gym
from gymray.nemo_rl.loading import load_with_defaults
from gymray.nemo_rl.overrides import check_override_keys, overrides_to_dict, parse_overrides
from gymray.recipes import ALGOS, REGISTRY
from gymray.recipes.base import manifest_notes
from gymray.storage.fs import is_remote, join

# Placeholders allowed in the templates (configs/nemo_rl/<algo>.yaml) and in user
# override values; replaced by plain text substitution so NeMo RL's own `${...}`
# interpolations pass through untouched.
# Formats NeMo RL renders through the tokenizer's chat template.
CHAT_RENDERED = ("openai", "preference", "binary")
PLACEHOLDERS = ("{run_dir}", "{run_id}", "{output}", "{algo}")


BASE_FILE = "nemo_rl.base.yaml"


CONFIG_FILE = "nemo_rl.yaml"


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


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _join(base: str, rel: str) -> str:
    return rel if is_remote(rel) or os.path.isabs(rel) else join(base, rel)


def entrypoint(algo: str, fmt: str, manifest: Mapping[str, Any] | None = None):
    """The NeMo RL script and base config that train ``fmt`` records of ``algo``
    (for a dataset: its recipe may pick another, e.g. a VLM entrypoint for images)."""
    recipe = REGISTRY[algo]
    if fmt not in recipe.entrypoints:
        raise ConfigError(
            f"record format {fmt!r} cannot be trained with {algo}: "
            f"{algo} takes {' or '.join(recipe.entrypoints)}"
        )
    return recipe.entrypoint(fmt, dict(manifest or {}))


def templates_dir_default() -> Path:
    """`configs/nemo_rl` of the checkout, or of the copy a wheel installs."""
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


def entrypoint_command(
    nemo_rl_dir: str,
    launcher: str,
    script: str,
    config_path: str,
    extra: Sequence[str] = (),
    env_file: str | None = None,
) -> str:
    """`cd <checkout> && <launcher> <script> --config <config>`, every argument quoted;
    with `env_file`, its variables are exported first (read on the cluster, so their
    values never travel in the job's metadata).

    >>> entrypoint_command("/x y", "uv run python", "examples/run_sft.py", "/c;rm -rf ~")
    "cd '/x y' && uv run python examples/run_sft.py --config '/c;rm -rf ~'"
    """
    argv = [*split_launcher(launcher), script, "--config", config_path, *extra]
    source = f"set -a && . {shlex.quote(env_file)} && set +a && " if env_file else ""
    return f"cd {shlex.quote(nemo_rl_dir)} && {source}{shlex.join(argv)}"


def build_config(
    algo: str,
    manifest: Mapping[str, Any],
    job: Any = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    templates_dir: str | Path | None = None,
    allow_empty: bool = False,
) -> BuiltConfig:
    """Build (without writing) the NeMo RL config and launch command for a dataset.

    `manifest` is the dataset's manifest.json. `job` is a JobSettings (or a dict with
    the same names): nemo_rl_dir, launcher, base_config, script, runs_dir,
    nemo_gym_dir. Raises ConfigError on anything the user must fix: a user key NeMo
    RL's base config does not have, a chat template that cannot render the records'
    tool calls, Gym agents no config serves (checked when the checkouts are readable
    here; otherwise `keys_checked` is False and a warning says so); and
    EmptyDatasetError for a dataset without training records (unless `allow_empty`).

    >>> built = build_config("sft", manifest, {"nemo_rl_dir": "/shared/nemo-rl"},
    ...                      {"policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})  # doctest: +SKIP
    >>> write_config(built)  # doctest: +SKIP
    """
    output, fingerprint, fmt = _check_manifest(algo, manifest)
    checks.empty(dict(manifest), allow_empty)
    entry = entrypoint(algo, fmt, manifest)
    nemo_rl_dir = checkout_dir(job)
    script = _setting(job, "script") or entry.script
    special = entry != REGISTRY[algo].entrypoints[fmt]  # e.g. the VLM entrypoint for images
    if special and script != entry.script:
        raise ConfigError(
            f"job.script={script} cannot train this dataset: its records hold images, which "
            f"need {entry.script} (leave job.script unset), or set chat.images=filter to "
            "prepare a text-only dataset"
        )
    base_config = _setting(job, "base_config") or entry.base_config
    base_abs = base_config if os.path.isabs(base_config) else os.path.join(nemo_rl_dir, base_config)
    launcher = _setting(job, "launcher") or "uv run python"
    split_launcher(launcher)

    files = manifest["files"]
    train_path = _join(output, files["train"])
    val_path = _join(output, files["val"]) if files.get("val") else None
    data = formats.get(fmt).data_config(
        train_path, val_path, {"tools_differ": bool(manifest.get("tools_differ"))}
    )
    runs_dir = run_root(job, output)

    template = load_template(algo, templates_dir)
    user = parse_overrides(overrides)
    user_tree = overrides_to_dict(user)
    # Removals (`~key`) cannot be written in YAML: NeMo RL applies them from its command line.
    removals = sorted(f"~{ov.key}" for ov in user if ov.remove)
    warnings: list[str] = []
    base = None
    if os.path.isdir(nemo_rl_dir):
        if not os.path.isfile(os.path.join(nemo_rl_dir, script)):
            raise ConfigError(
                f"NeMo RL entrypoint {script} not found in job.nemo_rl_dir={nemo_rl_dir}: "
                "is that a NeMo RL checkout (or set job.script)?"
            )
        base = load_with_defaults(base_abs)
    else:
        warnings.append(
            f"NeMo RL checkout {nemo_rl_dir} is not readable here: nemo_rl.* keys, the chat "
            "template and record lengths were not checked against its config"
        )
    gym_layer: dict = {}
    if fmt == "nemo_gym":
        gym_layer, gym_warnings = _gym_servers(manifest, base, user_tree, nemo_rl_dir, job)
        warnings += gym_warnings
    merged = OmegaConf.merge(data, template, gym_layer, user_tree)
    merged_plain = OmegaConf.to_container(merged)
    assert isinstance(merged_plain, dict)

    new_keys: list[str] = []
    full = None
    if base is not None:
        reset = OmegaConf.create({"data": {"train": None, "validation": None}})
        ours = OmegaConf.merge(base, reset, data, template, gym_layer)
        assert isinstance(ours, DictConfig)
        new_keys = check_override_keys(user, ours, f"{base_config} (with its defaults)")
        full = OmegaConf.merge(ours, user_tree)
        for removal in removals:
            _remove_key(full, removal[1:])
    if special:  # said: it is not the entrypoint the README names for the algorithm
        images = manifest_notes(manifest).get("content:images", 0)
        warnings.append(
            f"{images} record(s) hold images: NeMo RL's {entry.script} trains this dataset "
            f"from {entry.base_config}, a vision-language model's (nemo_rl.policy.model_name "
            "must name one; its processor's chat template is not checked here); set "
            "chat.images=filter to train a text model on the other records"
        )
    if fmt in CHAT_RENDERED and not special:  # a VLM's processor brings its own template
        warnings += checks.chat_template(
            full if full is not None else merged, dict(manifest), nemo_rl_dir
        )
    warnings += checks.lengths(full, dict(manifest)) if full is not None else []

    run_key = {
        "algo": algo,
        "fingerprint": fingerprint,
        "output": output,
        "runs_dir": runs_dir,
        "nemo_rl_dir": nemo_rl_dir,
        "script": script,
        "base_config": base_config,
        "config": merged_plain,
        "removals": removals,
    }
    digest = hashlib.sha256(json.dumps(run_key, sort_keys=True, default=str).encode())
    run_id = f"{algo}-{digest.hexdigest()[:12]}"
    run_dir = os.path.join(runs_dir, run_id)
    final = _substitute(
        merged_plain,
        {"{run_dir}": run_dir, "{run_id}": run_id, "{output}": output, "{algo}": algo},
    )
    base_path = os.path.join(run_dir, BASE_FILE)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    env_file = _setting(job, "env_file")
    if env_file and not os.path.isabs(env_file):
        raise ConfigError(f"job.env_file={env_file!r} must be an absolute path on the cluster")
    command = entrypoint_command(nemo_rl_dir, launcher, script, config_path, removals, env_file)
    header = (
        f"# Written by gymray for run {run_id} (dataset {output}, fingerprint "
        f"{fingerprint}).\n# Launched as: {command}\n"
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
        entrypoint=command,
        dataset=output,
        fingerprint=fingerprint,
        keys_checked=base is not None,
        new_keys=new_keys,
        warnings=warnings,
    )


def _check_manifest(algo: str, manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    if algo not in REGISTRY:
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
    if not manifest["files"].get("train"):
        raise ConfigError(f"dataset manifest of {manifest['output']} names no train file")
    return str(manifest["output"]), str(manifest["fingerprint"]), str(manifest["format"])


def checkout_dir(job: Any) -> str:
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
    return os.path.normpath(nemo_rl_dir)


def run_root(job: Any, output: str) -> str:
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
    return _local(runs_dir)


def _gym_servers(manifest, base, user_tree: dict, nemo_rl_dir: str, job) -> tuple[dict, list[str]]:
    """The Gym configs to start: the user's, checked to serve every agent of the data,
    else derived from the Gym checkout by agent name."""
    agents = gym.dataset_agents(dict(manifest))
    if not agents:
        return {}, [
            "the dataset's manifest names no Gym agents (prepared by an older gymray?): "
            "env.nemo_gym.config_paths was not derived from the data"
        ]
    root = gym.gym_dir(nemo_rl_dir, _setting(job, "nemo_gym_dir"))
    given = ((user_tree.get("env") or {}).get("nemo_gym") or {}).get("config_paths")
    if given is not None:
        if not root.is_dir():
            return {}, [f"NeMo Gym checkout {root} is not readable here: not checked that "
                        "nemo_rl.env.nemo_gym.config_paths serves the dataset's agents"]  # fmt: skip
        missing = gym.unserved(agents, list(given), root)
        if missing:
            raise ConfigError(
                f"nemo_rl.env.nemo_gym.config_paths serves none of the agent(s) "
                f"{', '.join(missing)} that the dataset's rows are routed to: add the Gym "
                "configs declaring them (or leave config_paths unset for gymray to find them)"
            )
        return {}, _checked_rows(manifest, root, list(given), job)
    base_paths = _config_list(base, "env.nemo_gym.config_paths") or [gym.DEFAULT_MODEL_CONFIG]
    paths, warnings = gym.derive(agents, base_paths, root)
    warnings += _checked_rows(manifest, root, paths, job)
    return {"env": {"nemo_gym": {"config_paths": paths}}}, warnings


def _checked_rows(manifest, root: Path, config_paths: list[str], job) -> list[str]:
    if not _setting(job, "check_gym_rows", True):
        return []
    return checks.gym_rows(dict(manifest), root, config_paths)


def _remove_key(cfg: DictConfig, key: str) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node:
        with open_dict(node):
            node.pop(leaf)


def _config_list(cfg: DictConfig | None, key: str) -> list[str]:
    value = checks.select(cfg, key, default=None)
    return [str(v) for v in value] if isinstance(value, ListConfig | list) else []


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
