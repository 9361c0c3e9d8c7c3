"""Which NeMo Gym servers a GRPO run starts: the configs that serve the data's agents.

NeMo RL starts the Gym servers listed in ``env.nemo_gym.config_paths``; a row is
routed to the agent its ``agent_ref.name`` names (a top-level instance of a Gym
config whose one key is ``responses_api_agents``). A run whose configs do not
serve every agent of its data fails on the first batch. gymray derives the
configs from a Gym checkout by agent name when the user gives none, and checks
every agent is served before submitting.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from gymray.errors import ConfigError
from gymray.recipes.base import manifest_notes

AGENTS_KEY = "responses_api_agents"
MODELS_DIR = "responses_api_models"
# NeMo RL's Gym examples start the policy model server from this ("Required!").
DEFAULT_MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"
# Where a config is looked for first when several declare the same agent.
PREFERRED = ("resources_servers", "responses_api_agents", "environments", "benchmarks")
SCANNED = ("resources_servers", "responses_api_agents", "environments", "benchmarks")


def gym_dir(nemo_rl_dir: str, configured: str | None) -> Path:
    """The Gym checkout: ``job.nemo_gym_dir``, else NeMo RL's own submodule."""
    return Path(configured) if configured else Path(nemo_rl_dir) / "3rdparty/Gym-workspace/Gym"


def _load(path: Path) -> DictConfig | None:
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # a Gym config gymray cannot read is one it does not use
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def declared_agents(path: Path, root: Path, seen: frozenset = frozenset()) -> set[str]:
    """Agent instances a config declares, itself or through its ``config_paths``."""
    if path in seen:
        return set()
    cfg = _load(path)
    if cfg is None:
        return set()
    agents = {
        str(k)
        for k, v in cfg.items_ex(resolve=False)
        if isinstance(v, DictConfig) and AGENTS_KEY in v
    }
    chained = cfg.get("config_paths")
    if isinstance(chained, ListConfig):
        for rel in chained:
            agents |= declared_agents(resolve(str(rel), root), root, seen | {path})
    return agents


def resolve(rel: str, root: Path) -> Path:
    """A config path as NeMo Gym finds it: absolute, else under the Gym checkout."""
    p = Path(rel)
    return p if p.is_absolute() else root / p


def agent_index(root: Path) -> dict[str, list[Path]]:
    """Every agent instance declared in the checkout's configs -> the files declaring it."""
    index: dict[str, list[Path]] = {}
    for top in SCANNED:
        for path in sorted((root / top).glob("**/*.yaml")):
            cfg = _load(path)
            if cfg is None:
                continue
            for key, value in cfg.items_ex(resolve=False):
                if isinstance(value, DictConfig) and AGENTS_KEY in value:
                    index.setdefault(str(key), []).append(path)
    return index


def _rank(path: Path, root: Path) -> tuple:
    rel = path.relative_to(root).parts
    top = PREFERRED.index(rel[0]) if rel[0] in PREFERRED else len(PREFERRED)
    return (top, len(rel), str(path))


def derive(agents: Iterable[str], base_paths: list[str], root: Path) -> tuple[list[str], list[str]]:
    """(config_paths serving ``agents``, warnings): the base config's model server
    configs, then one config per agent (the preferred one when several declare it).
    Raises ConfigError naming the agents no config declares."""
    if not root.is_dir():
        raise ConfigError(
            f"the NeMo Gym checkout {root} is not readable here, so gymray cannot find the "
            "Gym configs that serve this dataset's agents: set job.nemo_gym_dir=<Gym "
            "checkout> or nemo_rl.env.nemo_gym.config_paths=[...]"
        )
    index = agent_index(root)
    warnings = []
    paths = [str(resolve(p, root)) for p in base_paths if p.startswith(MODELS_DIR)]
    missing = []
    for agent in sorted(set(agents)):
        found = sorted(index.get(agent, []), key=lambda p: _rank(p, root))
        if not found:
            missing.append(agent)
            continue
        if len(found) > 1:
            others = ", ".join(str(p.relative_to(root)) for p in found[1:])
            warnings.append(
                f"Gym agent {agent} is declared in {len(found)} configs; using "
                f"{found[0].relative_to(root)} (not {others}): set "
                "nemo_rl.env.nemo_gym.config_paths to choose"
            )
        if str(found[0]) not in paths:
            paths.append(str(found[0]))
    if missing:
        raise ConfigError(
            f"no NeMo Gym config in {root} declares the agent(s) {', '.join(missing)} that "
            "the dataset's rows name: set nemo_rl.env.nemo_gym.config_paths to configs that "
            "serve them, or grpo.agent_name to an agent that exists"
        )
    return paths, warnings


def unserved(agents: Iterable[str], config_paths: list[str], root: Path) -> list[str]:
    """Agents of the data that none of ``config_paths`` declares."""
    served: set[str] = set()
    for rel in config_paths:
        served |= declared_agents(resolve(rel, root), root)
    return sorted(set(agents) - served)


def dataset_agents(manifest: dict) -> list[str]:
    notes = manifest_notes(manifest)
    return sorted(k.split(":", 1)[1] for k in notes if k.startswith("agent:"))
