"""NeMo RL: loading its configs, its override grammar, and the config gymray writes for a run."""

from gymray.nemo_rl.build import (
    BASE_FILE,
    CONFIG_FILE,
    BuiltConfig,
    build_config,
    entrypoint,
    entrypoint_command,
    split_launcher,
    write_config,
)
from gymray.nemo_rl.loading import load_with_defaults
from gymray.nemo_rl.overrides import Override, check_override_keys, parse_overrides

__all__ = [
    "BASE_FILE",
    "CONFIG_FILE",
    "BuiltConfig",
    "Override",
    "build_config",
    "check_override_keys",
    "entrypoint",
    "entrypoint_command",
    "load_with_defaults",
    "parse_overrides",
    "split_launcher",
    "write_config",
]
