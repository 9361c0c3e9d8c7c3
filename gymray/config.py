"""gymray's own settings: pydantic models, loaded with OmegaConf.

One place decides precedence (lowest first):
built-in defaults < ``configs/<algo>.yaml`` < ``--config`` files < ``key=value``.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ALGOS = ("grpo", "sft", "dpo")
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChatSettings(Strict):
    reasoning: Literal["drop", "reasoning_content", "think"] = Field(
        "drop",
        description="reasoning items: drop them, put them in reasoning_content, or wrap them in <think> tags",
    )
    images: Literal["keep", "filter"] = Field(
        "keep", description="keep image parts, or filter rows with images (text-only)"
    )
    incomplete: Literal["trim", "filter"] = Field(
        "trim",
        description="a trajectory that does not end on an assistant turn: trim it to its last complete turn, or filter it",
    )


class SplitSettings(Strict):
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 0


class SFTSettings(Strict):
    format: Literal["openai", "simple"] = "openai"
    reward_threshold: float | None = 0.95
    drop_truncated: bool = True
    best_of_n: bool = False
    dedup: bool = True
    min_examples: int = Field(
        100, description="warn when fewer training records than this are written"
    )


class DPOSettings(Strict):
    strategy: Literal["same_prompt", "stratified"] = "same_prompt"
    min_gap: float = Field(0.2, ge=0.0, description="in the environment's own reward units")
    pairing: Literal["best_vs_worst", "all"] = "best_vs_worst"
    max_pairs_per_task: int = Field(4, ge=1)
    high_threshold: float = 0.7
    low_threshold: float = 0.4
    format: Literal["preference", "binary"] = "preference"
    drop_truncated: bool = False


class GRPOSettings(Strict):
    format: Literal["auto", "nemo_gym", "math"] = "auto"
    reward_threshold: float | None = 0.0
    pass_rate: tuple[float, float] | None = None


class RaySettings(Strict):
    address: str | None = Field(
        None, description="Ray address; default: RAY_ADDRESS, else a local Ray started by gymray"
    )
    num_cpus: int | None = None
    object_store_memory: int | None = None
    block_bytes: int = Field(16 << 20, ge=1024, description="raw bytes of rollout lines per block")
    split_bytes: int = Field(
        256 << 20,
        ge=1024,
        description="local uncompressed files larger than this are read as several ranges of this size, in parallel",
    )
    partitions: int | None = Field(
        None, ge=1, description="hash partitions for grouping (default: from input size)"
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


class StorageSettings(Strict):
    # Credentials never go here (settings are recorded in the manifest): they come
    # from the environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS).
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL)",
    )
    region: str | None = Field(None, description="S3 region (default: AWS_REGION)")
    anonymous: bool = False
    materialize_to: str | None = Field(
        None,
        description="shared local directory to copy an object-store dataset's train/val "
        "JSONL to, since NeMo RL reads local paths only",
    )


class Settings(Strict):
    algo: Literal["grpo", "sft", "dpo"]
    input: list[str] = Field(default_factory=lambda: [SAMPLE_INPUT])
    output: str = ""
    overwrite: bool = False
    tasks: list[str] = Field(default_factory=list)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    grpo: GRPOSettings = Field(default_factory=GRPOSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    job: dict[str, Any] = Field(default_factory=dict)
    nemo_rl: dict[str, Any] = Field(default_factory=dict, description="NeMo RL config overrides")

    @field_validator("input", "tasks", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def model_post_init(self, _: Any) -> None:
        if not self.output:
            self.output = str(Path("gymray-output") / self.algo)

    def recipe(self) -> BaseModel:
        return getattr(self, self.algo)

    def fingerprint_settings(self) -> dict:
        """The settings that change the dataset (not where it goes, nor how it runs)."""
        d = self.model_dump(mode="json")
        keep = {"algo", "tasks", "chat", "split", self.algo}
        return {k: v for k, v in d.items() if k in keep}


class ConfigError(ValueError):
    """A setting is wrong; the message says which and what to do."""


# Sub-trees whose keys are checked elsewhere: job.* by JobSettings (in
# load_settings), nemo_rl.* against the NeMo RL checkout when the job is built.
CHECKED_ELSEWHERE = ("nemo_rl", "job")


def _known_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_known_paths(ann, path + "."))
    return out


def _leaf_paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if not prefix and k in CHECKED_ELSEWHERE:
            continue
        path = f"{prefix}{k}"
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


def load_settings(
    algo: str, overrides: list[str] | dict | None = None, config_files: list[str] | None = None
) -> Settings:
    """Merge defaults, ``configs/<algo>.yaml``, config files and overrides; validate."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown algorithm '{algo}': choose one of {', '.join(ALGOS)}")
    layers = []
    template = configs_dir() / f"{algo}.yaml"
    if template.is_file():
        layers.append(OmegaConf.load(template))
    for f in config_files or []:
        if not Path(f).is_file():
            raise ConfigError(f"config file not found: {f}")
        layers.append(OmegaConf.load(f))
    if isinstance(overrides, dict):
        layers.append(OmegaConf.create(overrides))
    elif overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"expected key=value, got '{item}'")
        try:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:  # omegaconf raises several grammar errors
            raise ConfigError(f"cannot parse overrides: {e}") from None
    merged = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True) if layers else {}
    merged = dict(merged or {})
    merged.pop("algo", None)
    check_keys(merged, _known_paths(Settings))
    try:
        settings = Settings(algo=algo, **merged)
        if settings.job:
            from gymray.jobs import JobSettings

            JobSettings(**settings.job)  # refuse a bad job.* key now, not after prepare
        return settings
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if e.title == "JobSettings":
                loc = f"job.{loc}"
                if err["type"] == "extra_forbidden":
                    from gymray.jobs import JobSettings

                    close = difflib.get_close_matches(
                        str(err["loc"][0]), list(JobSettings.model_fields), n=1
                    )
                    hint = f"; did you mean 'job.{close[0]}'?" if close else ""
                    msgs.append(f"unknown setting '{loc}'{hint}")
                    continue
            msgs.append(f"{loc}: {err['msg']} (got {err.get('input')!r:.80})")
        raise ConfigError("invalid settings: " + "; ".join(msgs)) from None
