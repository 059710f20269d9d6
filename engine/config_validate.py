"""Config checking: :class:`ConfigError`, and plain data turned into a task's dataclasses, strictly typed.

:func:`from_dict` builds the dataclasses from the merged tree (:mod:`engine.config_load`): an unknown key
or a value of the wrong type raises ConfigError, one line naming the full key and the closest valid
names; each dataclass's ``validate(prefix)`` then checks its values, with :func:`choice` and
``_in_range``. The type check is ours (see :mod:`engine.config` for why). No torch, no YAML here.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Dict, List, Optional, Sequence, Type, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot run. The message is a single line meant for the user."""


class ForeignConfigError(ConfigError):
    """The config file is another task's (many keys unknown to the schema, e.g. a semantic
    segmentation config given to a detection tool); a tool that knows its checkpoint's kind adds it."""

    def for_checkpoint(self, weights: str, kind: Optional[str]) -> ConfigError:
        """The line for ``--weights`` of checkpoint kind ``kind`` (engine.checkpoint.KINDS) with this config."""
        words = (kind or "detection").replace("_", " ")
        return ConfigError(f"--weights {weights} is a {words} checkpoint, but --config {self}; give the config it "
                           "was trained with (its run's config.yaml)")


def choice(key: str, value: str, valid: Sequence[str]) -> None:
    """Raise ConfigError unless ``value`` is one of ``valid``; for ``validate()`` methods."""
    if value not in valid:
        close = difflib.get_close_matches(str(value), list(valid), n=3, cutoff=0.4)
        hint = f"closest valid: {', '.join(close)}" if close else f"valid: {', '.join(valid)}"
        raise ConfigError(f"{key}: '{value}' is not a valid value ({hint})")


def _in_range(key: str, value: float, what: str, low: Optional[float] = None, high: Optional[float] = None,
              low_open: bool = False, high_open: bool = True) -> None:
    """Raise ConfigError naming ``key`` unless ``value`` is finite and within the bounds (``low``
    included unless ``low_open``; ``high`` excluded unless ``high_open`` is False)."""
    ok = value == value and value not in (float("inf"), float("-inf"))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{key}: must be {what}; got {value}")


# --------------------------------------------------------------------------------------------------
# Validation: dict -> dataclass, strictly typed
# --------------------------------------------------------------------------------------------------


def _closest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    pool = close or list(valid)[:8]
    what = "closest valid" if close else "valid"
    return f"{what}: {', '.join(pool)}" if pool else "no keys are valid here"


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, List):
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_describe(arg)}"
    if origin in (dict, Dict):
        return "mapping"
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, key: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key + ".")
    if origin in (list, List, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {type(value).__name__} {value!r}")
        arg = args[0] if args else Any
        return [_convert(arg, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _, vt = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: `amp: off` means "off"
            return "on" if value else "off"
    raise ConfigError(f"{key}: expected {_describe(tp)}, got {type(value).__name__} {value!r}")


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise ConfigError(f"unknown key '{prefix}{k}' ({_closest(str(k), names)})")
        default = _field_default(fields[k])
        if isinstance(v, dict) and dataclasses.is_dataclass(default):
            # A partial section merges over the schema's own default for it (e.g. a task's
            # SolverConfig(base_lr=0.02)), not over the bare class defaults.
            v = _merge(dataclasses.asdict(default), v)
        kwargs[k] = _convert(hints[k], v, prefix + k)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        check(prefix)  # raises ConfigError naming the key; prefix is "model.backbone." etc.
    return obj


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(schema: Type[T], data: dict) -> T:
    """Build a ``schema`` dataclass from plain data, strictly; raises ConfigError."""
    return _build(schema, data or {})


def unknown_keys(schema, data: Any, prefix: str = "") -> List[str]:
    """The dotted keys of ``data`` (plain dicts and lists) that ``schema`` has no field for, a
    section's unknown name once (what it holds is not listed). Tells a config of another task (many
    unknown keys) from a typo (one)."""
    if not dataclasses.is_dataclass(schema) or not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema) if f.init}
    found = []
    for key, value in data.items():
        if key not in names:
            found.append(f"{prefix}{key}")
            continue
        tp = hints[key]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
            tp = args[0]
        if typing.get_origin(tp) in (list, List) and isinstance(value, list):
            (item,) = typing.get_args(tp) or (Any,)
            for i, element in enumerate(value):
                found += unknown_keys(item, element, f"{prefix}{key}[{i}].")
        else:
            found += unknown_keys(tp, value, f"{prefix}{key}.")
    return found
