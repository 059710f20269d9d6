"""Package ``__init__`` files that name their public API without importing it (PEP 562).

``from detection import Predictor`` imports ``detection.predictor`` (and torch) when that name is
first asked for, not when ``detection`` is imported: ``import detection.evaluation`` from
``tools/eval_coco.py`` then costs only what that module needs. Each package maps its public names to
the submodules that define them; ``__all__`` and ``dir()`` list them.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in submodules.

    ``exports`` maps each name to its submodule, relative (``{"Predictor": ".predictor"}``). Use::

        __all__ = list(_EXPORTS)
        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups no longer reach __getattr__
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
