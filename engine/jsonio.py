"""Strict JSON for every file a run writes (results.json, metrics.jsonl, predictions).

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: other readers (``jq``,
JavaScript, most JSON libraries) refuse such files. A metric that could not be computed (an AP with
no ground truth, a loss that blew up) is written as ``null`` instead. Numpy scalars become numbers.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["strict", "dumps", "write_json"]


def strict(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: non-finite floats -> None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return strict(obj.item())
    return obj


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: str, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON; a reader sees the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dumps(obj, indent=indent))
        f.write("\n")
    os.replace(tmp, path)
