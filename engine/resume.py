"""What a resume may change: the config of the run being continued against the one given now.

A resumed run continues the optimizer, schedule and data order of the checkpoint; a config that
differs in anything that shapes those (the learning rate, the model, the data, the batch) would mix
two experiments in one set of weights, with no trace of it. So ``--resume`` compares the config it
is given with the one the checkpoint recorded (``output_dir/config.yaml`` for checkpoints that hold
none) and stops with one line naming every differing key, exit code 2, unless the only changes are
in :data:`FREE_TO_CHANGE`: the run's length, how it logs, how often it evaluates and checkpoints,
loader workers and the process-group settings. ``--allow-config-change`` accepts any change
deliberately. The run's ``config.yaml`` is never overwritten: a resume that changed anything writes
its config as ``config.resume-{iteration}.yaml`` beside it (docs/tools.md, "Resuming").
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import yaml

from .config import ConfigError, to_dict

__all__ = ["FREE_TO_CHANGE", "config_changes", "check_resume_config", "forget_resume", "load_config_to_resume", "resume_config_path",
           "resumed_line", "resuming_from", "starting_weights_required"]

# Dotted keys (a trailing "." covers a whole section) a resume may change without --allow-config-change.
FREE_TO_CHANGE = ("solver.max_iter", "solver.max_epochs", "solver.checkpoint_period", "solver.keep_checkpoints",
                  "test.eval_period", "test.report", "test.report_max_mb", "logging.", "data.num_workers", "dist.",
                  "output_dir")


def _flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(tree, dict):
        out: Dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _free(key: str) -> bool:
    return any(key.startswith(f) if f.endswith(".") else key == f for f in FREE_TO_CHANGE)


def config_changes(old: dict, new: dict) -> List[Tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf both configs have that differs. A key
    only one of them has is a schema change between versions (a new key at its default, a
    removed one), not a change of the experiment."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]]


def _recorded_config(state: dict, output_dir: str) -> Tuple[Optional[dict], str]:
    if isinstance(state.get("config"), dict):
        return state["config"], "the checkpoint's config"
    path = os.path.join(output_dir, "config.yaml")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f), path
    return None, ""


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume_config(cfg, state: dict, checkpoint: str, allow_change: bool = False) -> List[str]:
    """Compare ``cfg`` (the config given now) with the one ``state`` (read from ``checkpoint``)
    was trained with. Returns the changed keys; raises ConfigError (one line) when a key outside
    :data:`FREE_TO_CHANGE` changed and ``allow_change`` is False."""
    old, where = _recorded_config(state, cfg.output_dir)
    if old is None:
        return []  # nothing recorded to compare with (a checkpoint of an older version)
    changes = config_changes(old, to_dict(cfg))
    blocked = [c for c in changes if not _free(c[0])]
    if blocked and not allow_change:
        shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in blocked[:6])
        more = f" and {len(blocked) - 6} more" if len(blocked) > 6 else ""
        raise ConfigError(f"--resume: the config differs from the run's ({where}, {checkpoint}) in {shown}{more}; "
                          "resuming would mix two experiments: use another output_dir, or pass "
                          "--allow-config-change to continue with the new values deliberately")
    return [k for k, _, _ in changes]


def resume_config_path(output_dir: str, iteration: int, changed: List[str]) -> Optional[str]:
    """Where a resumed run writes its config: nothing when it is unchanged, ``config.yaml`` only when
    the run has none, else ``config.resume-{iteration}.yaml`` (config.yaml is never overwritten)."""
    original = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(original):
        return original
    if not changed:
        return None
    return os.path.join(output_dir, f"config.resume-{iteration}.yaml")


# A resume from a checkpoint replaces every weight, so the run's starting weights (model.backbone.weights,
# a detector's or segmenter's model.weights) are neither read nor required then: the file may have moved
# or gone since the run started. The tools find the checkpoint before they build the model
# (load_config_to_resume, through engine.cli.parse_config); the config checks and the tasks' build_model
# ask here. Module state, because a tool runs one run per process.
_CHECKPOINT: Optional[str] = None
_LOADING_TO_RESUME = False


def resuming_from() -> Optional[str]:
    """The checkpoint this process resumes from, when its tool found one before building the model."""
    return _CHECKPOINT


def starting_weights_required() -> bool:
    """False while a config is loaded for a resume and once a checkpoint to resume from was found."""
    return not _LOADING_TO_RESUME and _CHECKPOINT is None


def forget_resume() -> None:
    """A new run in this process (engine.cli.parse_config; tests run several tools in one process)."""
    global _CHECKPOINT
    _CHECKPOINT = None


def resumed_line(model_cfg, checkpoint: str) -> str:
    """What a resumed run's log says of its starting weights (``model_cfg``: the config's model section)."""
    backbone = getattr(model_cfg, "backbone", None)
    given = [w for w in (getattr(model_cfg, "weights", None), getattr(backbone, "weights", None)) if w]
    where = os.path.dirname(checkpoint)
    if not given:
        return f"weights: from the checkpoint resumed in {where}"
    return (f"starting weights not read ({', '.join(given)}): the run resumes from a checkpoint in {where}, "
            "which replaces every weight")


def load_config_to_resume(load):
    """``load()`` (a config loader) for ``--resume`` or a torchrun restart: the config without the
    starting-weights file checks, when ``output_dir/checkpoints`` holds a checkpoint (that checkpoint is
    recorded for :func:`resuming_from`); None when it holds none (a fresh start: load as usual)."""
    from .checkpoint_write import Checkpointer  # imports torch: a resume trains, the other tools need not

    global _CHECKPOINT, _LOADING_TO_RESUME
    _CHECKPOINT = None
    _LOADING_TO_RESUME = True
    try:
        cfg = load()
    finally:
        _LOADING_TO_RESUME = False
    found = Checkpointer(cfg.output_dir).all()
    if not found:
        return None
    _CHECKPOINT = found[-1][1]
    return cfg

