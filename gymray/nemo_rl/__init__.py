"""NeMo RL: loading its configs (``loading``), its override grammar (``overrides``), the
config gymray writes for a run (``build``), the checks before a launch (``checks``,
``gym``, ``gym_models``). Import from the modules: this package imports nothing, so that
gymray's own settings can load YAML the way NeMo RL does."""
