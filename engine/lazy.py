"""Package ``__init__`` files that name their public API without importing it (PEP 562).

``from detection import Predictor`` imports ``detection.predictor`` (and torch) when that name is
first asked for, not when ``detection`` is imported: ``import detection.evaluation`` from
``tools/eval_coco.py`` then costs only what that module needs. Each package maps its public names to
the submodules that define them; ``__all__`` and ``dir()`` list them.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict, List, Sequence, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, modules: Dict[str, Sequence[str]]
                 ) -> Tuple[List[str], Callable[[str], Any], Callable[[], List[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in submodules.

    ``modules`` maps each submodule, relative, to the names it exports. In a package ``__init__``::

        __all__, __getattr__, __dir__ = lazy_exports(__name__, {".predictor": ["Predictor"], ...})
    """
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups no longer reach __getattr__
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return list(exports), __getattr__, __dir__
