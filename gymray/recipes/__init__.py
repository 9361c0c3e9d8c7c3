"""The algorithms gymray prepares data for: one module each, registered by name.

Every module of this package is imported here, so that each registers itself
(see :mod:`gymray.recipes.base`); adding an algorithm is adding its module.
"""

import importlib
import pkgutil

from gymray.recipes.base import REGISTRY, Recipe, get

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

ALGOS = tuple(sorted(REGISTRY))

__all__ = ["ALGOS", "REGISTRY", "Recipe", "get"]
