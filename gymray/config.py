"""gymray's settings: every model, and how they are loaded and merged.

One place decides precedence (lowest first):
built-in defaults < ``configs/<algo>.yaml`` < ``--config`` files < ``key=value``.

Each algorithm's own section (``sft.*``, ``dpo.*``, ...) is declared by its
recipe (:mod:`gymray.recipes`); :class:`Settings` gets one field per registered
recipe, so an algorithm added there is configurable here with no change.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model, field_validator

from gymray.chat import ChatSettings
from gymray.errors import ConfigError
from gymray.nemo_rl.loading import load_with_defaults
from gymray.recipes import ALGOS, REGISTRY
from gymray.recipes.base import Section

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_INPUT = str(PACKAGE_DIR / "samples" / "rollouts.jsonl")


def configs_dir() -> Path:
    """``configs/``: ``GYMRAY_CONFIGS_DIR``, else the checkout's (editable installs,
    ``ray job submit --working-dir``), else the copy a wheel installs under
    ``<prefix>/share/gymray/configs``."""
    env = os.environ.get("GYMRAY_CONFIGS_DIR")
    if env:
        return Path(env)
    checkout = PACKAGE_DIR.parent / "configs"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "gymray" / "configs"


class SplitSettings(Section):
    val_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="share of tasks in val (at least one when there are >= 2 tasks; 0 for none)",
    )
    seed: int = Field(0, description="seed of the task hash that splits train and val")


class RaySettings(Section):
    address: str | None = Field(
        None,
        description="Ray to use: a GCS address (head:6379), auto (the cluster ray start "
        "runs on this machine) or local; default: RAY_ADDRESS, else a new local Ray",
    )
    retries: int = Field(
        2,
        ge=0,
        description="runs the pipeline again this often when Ray loses a worker, actor "
        "or node it cannot recover by itself (outputs are the same)",
    )
    connect_timeout_s: float = Field(
        60.0, gt=0, description="give up connecting to a Ray cluster after this long (exit 5)"
    )
    progress_s: float = Field(
        30.0,
        ge=0,
        description="log a progress line (lines, MB read and MB/s, records, elapsed) at most "
        "this often while preparing, for logs without a progress bar; 0: never",
    )
    num_cpus: int | None = Field(None, description="CPUs of a local Ray gymray starts")
    object_store_memory: int | None = Field(
        None, description="object store bytes of a local Ray gymray starts"
    )
    block_bytes: int = Field(
        8 << 20,
        ge=1024,
        description="raw bytes of rollout lines per block: what a worker parses and holds at once",
    )
    split_bytes: int = Field(
        256 << 20,
        ge=1024,
        description="local uncompressed files larger than this are read as several ranges of "
        "this size, in parallel; smaller files share a Ray task up to this many bytes of lines",
    )
    partitions: int | None = Field(
        None,
        ge=1,
        description="task-hash ranges for grouping (default: from the input: ~20,000 lines "
        "a range when keys are sorted, ~64 MiB of lines when whole rollouts are)",
    )
    shuffle: Literal["auto", "keys", "rollouts"] = Field(
        "auto",
        description="what grouped recipes shuffle: small keys, reading used lines back "
        "by offset (auto: for local uncompressed inputs, or any with ray.scratch), or whole rollouts",
    )
    scratch: str | None = Field(
        None,
        description="a directory every Ray node can read (NFS/Lustre, or local on one node): "
        ".gz and object-store inputs of grouped recipes are copied there uncompressed, so "
        "that the shuffle carries keys only; removed when prepare ends",
    )


class StorageSettings(Section):
    # Credentials never go here (settings are recorded in the manifest): they come
    # from the environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS).
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL)",
    )
    region: str | None = Field(None, description="S3 region (default: AWS_REGION)")
    anonymous: bool = Field(False, description="read object stores without credentials")
    materialize_to: str | None = Field(
        None,
        description="shared local directory to copy an object-store dataset's train/val "
        "JSONL to, since NeMo RL reads local paths only",
    )


class JobSettings(Section):
    """How to launch NeMo RL as a Ray Job (``job.*``)."""

    nemo_rl_dir: str | None = Field(
        None,
        description="absolute path of the NeMo RL checkout on the cluster nodes (the job cds there)",
    )
    launcher: str = Field(
        "uv run python", description="runs the script: `uv run python`, `python`, or a path"
    )
    base_config: str | None = Field(
        None,
        description="NeMo RL base config, relative to nemo_rl_dir or absolute (default per algorithm)",
    )
    script: str | None = Field(
        None, description="NeMo RL entrypoint relative to nemo_rl_dir (default per algorithm)"
    )
    runs_dir: str | None = Field(
        None, description="where run configs, checkpoints and logs go (default <dataset>/runs)"
    )
    nemo_gym_dir: str | None = Field(
        None,
        description="NeMo Gym checkout whose configs serve GRPO's agents (default: NeMo RL's "
        "3rdparty/Gym-workspace/Gym)",
    )
    env_file: str | None = Field(
        None,
        description="a KEY=VALUE file on the cluster the job exports before NeMo RL starts: "
        "the way to pass secrets (values stay out of Ray's job metadata)",
    )
    env_vars: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="environment of the training job, in its runtime_env: Ray shows the "
        "values to anyone who can list jobs (use env_file for secrets)",
    )
    pass_env: list[str] = Field(
        default_factory=list,
        description="names of variables copied from gymray's environment into the job's "
        "runtime_env (visible in Ray's job metadata, as env_vars)",
    )
    address: str | None = Field(
        None,
        description="job API (http://head:8265); default: the cluster ray.address names, "
        "the connected cluster, RAY_API_SERVER_ADDRESS or RAY_ADDRESS",
    )
    entrypoint_num_cpus: float | None = Field(1, description="CPUs held by the training driver")
    entrypoint_num_gpus: float | None = Field(None, description="GPUs held by the driver")
    entrypoint_memory: int | None = Field(None, description="memory (bytes) held by the driver")
    entrypoint_resources: dict[str, float] = Field(
        default_factory=dict, description="custom resources held by the driver"
    )
    submission_id: str | None = Field(
        None, description="override the deterministic job id (e.g. to train again)"
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="extra Ray Job metadata")
    timeout_s: float | None = Field(
        None, description="give up waiting after this long (exit 6); the job keeps running"
    )
    on_failed: Literal["report", "retry"] = Field(
        "report",
        description="when this step's job already FAILED/STOPPED: report it, or submit a new attempt",
    )
    check_gym_rows: bool = Field(
        True,
        description="refuse GRPO rows that lack fields their NeMo Gym request model requires",
    )
    check_resources: bool = Field(
        True,
        description="refuse entrypoint resources larger than the cluster's (off for autoscaling)",
    )

    def env(self) -> dict[str, str]:
        """The job's environment variables, with real values (never print this)."""
        out: dict[str, str] = {}
        for name in self.pass_env:
            if name not in os.environ:
                raise ConfigError(
                    f"job.pass_env names {name}, which is not set in gymray's environment"
                )
            out[name] = os.environ[name]
        out.update({k: v.get_secret_value() for k, v in self.env_vars.items()})
        return out


class SettingsBase(Section):
    algo: str = Field(description="the algorithm: " + ", ".join(ALGOS))
    input: list[str] = Field(
        default_factory=lambda: [SAMPLE_INPUT],
        description="rollout files, directories, globs (local, s3://, gs://), one or a list",
    )
    output: str = Field("", description="dataset directory (default gymray-output/<algo>)")
    overwrite: bool = Field(False, description="replace a gymray dataset built with other settings")
    allow_empty: bool = Field(
        False,
        description="accept a dataset with no training records: exit 0 and launch anyway",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="NeMo Gym task files or *_materialized_inputs.jsonl (GRPO ground truth)",
    )
    chat: ChatSettings = Field(default_factory=ChatSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    job: JobSettings = Field(default_factory=JobSettings)
    nemo_rl: dict[str, Any] = Field(default_factory=dict, description="NeMo RL config overrides")

    @field_validator("input", "tasks", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, v: str) -> str:
        if v not in REGISTRY:
            raise ValueError(f"unknown algorithm {v!r}: choose one of {', '.join(ALGOS)}")
        return v

    def model_post_init(self, _: Any) -> None:
        if not self.output:
            self.output = str(Path("gymray-output") / self.algo)

    def section(self) -> Section:
        """The running algorithm's own settings (``settings.<algo>``)."""
        return getattr(self, self.algo)

    def fingerprint_settings(self) -> dict:
        """The settings that change the dataset (not where it goes, nor how it runs)."""
        d = self.model_dump(mode="json")
        keep = {"algo", "tasks", "chat", "split", self.algo}
        return {k: v for k, v in d.items() if k in keep}


Settings = create_model(
    "Settings",
    __base__=SettingsBase,
    __doc__="All of gymray's settings; one section per registered algorithm.",
    **{
        name: (cls.settings, Field(default_factory=cls.settings, description=cls.help))
        for name, cls in sorted(REGISTRY.items())
    },
)

# Sub-trees whose keys are checked elsewhere: nemo_rl.* against the NeMo RL
# checkout when the job is built.
CHECKED_ELSEWHERE = ("nemo_rl",)
FREE_MAPPINGS = ("job.env_vars", "job.metadata", "job.entrypoint_resources")


def known_paths(model: type = Settings, prefix: str = "") -> list[str]:
    """Every settings key, dotted: ``sft.format``, ``ray.block_bytes``, ..."""
    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(known_paths(ann, path + "."))
    return out


def _leaf_paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if (not prefix and k in CHECKED_ELSEWHERE) or path in FREE_MAPPINGS:
            out.append(path)
            continue
        out.extend(_leaf_paths(v, path + ".") if isinstance(v, dict) and v else [path])
    return out


def check_keys(cfg: dict, known: list[str]) -> None:
    known_set = set(known)
    for path in _leaf_paths(cfg):
        if path in known_set:
            continue
        close = difflib.get_close_matches(path, known, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown setting '{path}'{hint}")


def _validation_error(e: ValidationError, prefix: str = "") -> ConfigError:
    msgs = []
    for err in e.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, known_paths(), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msgs.append(f"unknown setting '{loc}'{hint}")
        else:
            msgs.append(f"{loc}: {err['msg']} (got {err.get('input')!r:.80})")
    return ConfigError("invalid settings: " + "; ".join(msgs))


def with_job(settings: SettingsBase, job: dict | None, nemo_rl: dict | None) -> SettingsBase:
    """``settings`` with ``job.*`` keys and NeMo RL overrides added (the API's submit)."""
    try:
        merged = JobSettings.model_validate(
            {**settings.job.model_dump(exclude_unset=True), **(job or {})}
        )
    except ValidationError as e:
        raise _validation_error(e, "job.") from None
    return settings.model_copy(
        update={"job": merged, "nemo_rl": {**settings.nemo_rl, **(nemo_rl or {})}}
    )


def parse_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Command-line settings in NeMo RL's (Hydra's) grammar -> (dotlist, removals).

    ``key=v`` sets; ``++key=v`` and ``+key=v`` set or add (gymray's own keys always
    exist, so both mean set; under ``nemo_rl.`` they mark a key NeMo RL's config lacks);
    ``~key`` removes: back to the default for gymray's keys, out of NeMo RL's config
    for ``nemo_rl.*`` keys."""
    dotlist, removals = [], []
    for item in items:
        if item.startswith("~"):
            if "=" in item:
                raise ConfigError(f"'{item}': ~key removes a key and takes no value")
            removals.append(item[1:])
            continue
        if "=" not in item:
            raise ConfigError(f"expected key=value, ++key=value or ~key, got '{item}'")
        force = item.startswith("+")
        key, value = item.lstrip("+").split("=", 1)
        if force and key.startswith("nemo_rl."):
            key = "nemo_rl.++" + key[len("nemo_rl.") :]
        dotlist.append(f"{key}={value}")
    return dotlist, removals


def _unparsable(dotlist: list[str], error: Exception) -> ConfigError:
    """One line naming the override whose value is not YAML (a Jinja chat template's
    ``{%``, a ``: `` or ``#`` in a bare value), and how to give it."""
    for item in dotlist:
        try:
            OmegaConf.from_dotlist([item])
        except Exception as e:  # (as above)
            error = e
            key = item.split("=", 1)[0].replace("++", "")
            break
    else:
        key = None
    why = " ".join(str(error).split("\n")[0].split())  # YAML's errors run over lines
    what = f"the value of {key}" if key else "the overrides"
    return ConfigError(
        f"cannot parse {what} ({why}): quote it as a YAML string, e.g. "
        f"'{key or 'key'}=\"...\"', or put it in a --config file"
    )


def _remove(tree: dict, key: str) -> None:
    if key.startswith("nemo_rl."):
        tree.setdefault("nemo_rl", {})["~" + key[len("nemo_rl.") :]] = None
        return
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def load_settings(
    algo: str, overrides: list[str] | dict | None = None, config_files: list[str] | None = None
) -> SettingsBase:
    """Merge defaults, ``configs/<algo>.yaml``, config files (each may start with NeMo
    RL's ``defaults:``) and overrides; validate."""
    if algo not in REGISTRY:
        close = difflib.get_close_matches(algo, ALGOS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown algorithm '{algo}'{hint}: choose one of {', '.join(ALGOS)}")
    layers = []
    template = configs_dir() / f"{algo}.yaml"
    if template.is_file():
        layers.append(OmegaConf.load(template))
    for f in config_files or []:
        if not Path(f).is_file():
            raise ConfigError(f"config file not found: {f}")
        layers.append(load_with_defaults(f))
    removals: list[str] = []
    if isinstance(overrides, dict):
        layers.append(OmegaConf.create(overrides))
    elif overrides:
        dotlist, removals = parse_items(list(overrides))
        try:
            layers.append(OmegaConf.from_dotlist(dotlist))
        except Exception as e:  # omegaconf raises several grammar errors
            raise _unparsable(dotlist, e) from None
    merged = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True) if layers else {}
    merged = dict(merged or {})
    merged.pop("algo", None)
    for key in removals:
        _remove(merged, key)
    check_keys(merged, known_paths())
    try:
        return Settings(algo=algo, **merged)
    except ValidationError as e:
        raise _validation_error(e) from None


def help_rows(algo: str) -> list[tuple[str, str, str]]:
    """(key, effective default, meaning) of every setting of ``algo`` (its recipe's
    section and the common ones), from the models and ``configs/<algo>.yaml``."""
    current = load_settings(algo).model_dump(mode="json")
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], values: dict, prefix: str) -> None:
        for name, f in model.model_fields.items():
            if not prefix and (name == "algo" or (name in REGISTRY and name != algo)):
                continue
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, values.get(name) or {}, f"{prefix}{name}.")
            else:
                value = values.get(name)
                shown = "null" if value is None else json.dumps(value)
                rows.append((f"{prefix}{name}", shown, f.description or ""))

    walk(Settings, current, "")
    return rows
