"""Loading a NeMo RL YAML the way NeMo RL does: `defaults:` chains and `_override_`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gymray.errors import ConfigError


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
