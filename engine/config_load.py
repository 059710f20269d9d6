"""Loading a config: the YAML file and its ``_base_`` chain, ``key.sub=value`` overrides, then the strict
check of :mod:`engine.config_validate`; and writing the resolved config a run used.

OmegaConf does the YAML merging and ``${...}`` interpolation; lists replace rather than merge
element-wise. No torch here (``tools/check_dataset.py`` starts without it).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Type, TypeVar

import yaml
from omegaconf import OmegaConf

from .config_validate import ConfigError, ForeignConfigError, from_dict, unknown_keys

T = TypeVar("T")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, found {type(data).__name__}")
    return data


def _load_tree(path: str, seen: tuple = ()) -> Any:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(seen)}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create({})
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: _base_ file not found: {base}")
        merged = OmegaConf.merge(merged, _load_tree(base_path, seen + (path,)))
    # Lists replace rather than merge element-wise, as in MMDetection and detectron2.
    return OmegaConf.merge(merged, OmegaConf.create(data))


def _parse_override(text: str):
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, value = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        parsed = yaml.safe_load(value) if value.strip() != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _set_path(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
            continue
        if p not in node or not isinstance(node[p], (dict, list)):
            node[p] = {}
        node = node[p]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def load_config(schema: Type[T], path: Optional[str] = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (with its ``_base_`` chain), apply ``overrides`` and validate against ``schema``."""
    tree = OmegaConf.create({}) if path is None else _load_tree(path)
    plain = OmegaConf.to_container(tree, resolve=True) if len(tree) else {}
    typed = []
    for text in overrides:
        key, value = _parse_override(text)
        try:
            _set_path(plain, key, value)
        except (ValueError, IndexError, TypeError):
            raise ConfigError(f"override '{text}': '{key}' does not address a key of the config") from None
        typed.append(key)
    try:
        cfg = from_dict(schema, plain)
    except ConfigError as e:
        task = getattr(schema, "TASK", None)
        if not str(e).startswith("unknown key") or task is None:
            raise
        unknown = unknown_keys(schema, plain)
        if len(unknown) < 2:  # one unknown key is a typo: the message names the closest valid ones
            raise
        where = path or "the config"
        raise ForeignConfigError(f"{where}: not a {task} config ({len(unknown)} keys unknown to it: "
                          f"{', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''}); "
                          f"{getattr(schema, 'TOOLS', '')}".rstrip("; ")) from None
    object.__setattr__(cfg, "_overridden", frozenset(typed))  # not a field: never written to config.yaml
    return cfg


def overridden_keys(cfg) -> frozenset:
    """The keys ``load_config`` set from overrides (the command line): ``{"solver.max_iter", ...}``."""
    return getattr(cfg, "_overridden", frozenset())


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg, path: str) -> None:
    """Write the resolved config (what actually ran) next to the run's outputs."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg))

