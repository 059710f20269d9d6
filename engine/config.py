"""Typed experiment configs: YAML files validated against dataclasses.

A config file is YAML. ``_base_: other.yaml`` (or a list of files, paths relative to the file that
names them) is loaded first and the file's own keys are merged over it; ``key.sub=value`` overrides
from the command line are merged last. The merged tree is then checked against the task's dataclass
schema: an unknown key or a value of the wrong type raises :class:`ConfigError`, whose message is one
line naming the key and the closest valid names. Tools turn it into exit code 2 before any work.

OmegaConf does the YAML loading, the merging and ``${...}`` interpolation. The type check is ours:
OmegaConf's structured merge casts silently (``name: 3`` becomes ``"3"``) and loses the path of keys
inside lists of dataclasses, and we want one line that names the full key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Type, TypeVar, Union

import yaml
from omegaconf import OmegaConf

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


# --------------------------------------------------------------------------------------------------
# The shared vocabulary (docs/ARCHITECTURE.md): every task's config is a RunConfig. The backbone's
# vocabulary is backbones.config.BackboneConfig: this layer knows no network.
# --------------------------------------------------------------------------------------------------


@dataclass
class SolverConfig:
    optimizer: str = "SGD"  # SGD | AdamW
    base_lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False  # exclude norm weights and all biases from weight decay
    ims_per_batch: int = 256  # global batch, all ranks and accumulation steps together
    reference_batch: int = 0  # >0: schedule written for this global batch; LR and iterations rescale
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    max_iter: int = 1000
    max_epochs: int = 0  # >0: overrides max_iter with epochs * len(train) / ims_per_batch
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    lr_schedule: str = "multistep"  # step | multistep | cosine | poly | plateau | constant
    steps: List[int] = field(default_factory=list)  # multistep milestones; step: [period]
    gamma: float = 0.1
    poly_power: float = 0.9
    min_lr_factor: float = 0.0  # cosine floor as a fraction of base_lr
    plateau_patience: int = 2  # evaluations without improvement before dividing the LR
    plateau_threshold: float = 1e-3
    checkpoint_period: int = 1000
    keep_checkpoints: int = 3
    # auto: engine.hardware picks bf16 where the device computes it natively (GPUs of compute
    # capability 8.0+, CPUs with AVX512-BF16 or AMX), fp16 on older GPUs, fp32 elsewhere.
    # off | fp16 (CUDA, grad scaler) | bf16 force a precision.
    amp: str = "auto"
    clip_grad: float = 0.0  # max global grad norm; 0 disables
    ema: bool = False
    ema_decay: float = 0.9998
    channels_last: Union[bool, str] = "auto"  # auto (engine.hardware.choose_channels_last) | true | false
    compile: bool = False

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "optimizer", self.optimizer, ["SGD", "AdamW"])
        choice(prefix + "lr_schedule", self.lr_schedule,
               ["step", "multistep", "cosine", "poly", "plateau", "constant"])
        choice(prefix + "amp", self.amp, ["auto", "off", "fp16", "bf16"])
        if isinstance(self.channels_last, str):
            choice(prefix + "channels_last", self.channels_last, ["auto", "true", "false"])
            if self.channels_last != "auto":
                self.channels_last = self.channels_last == "true"
        for name in ("ims_per_batch", "accumulate", "max_iter", "checkpoint_period", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}{name}: must be at least 1, got {getattr(self, name)}")
        # Numbers torch.optim would refuse with a traceback that names no key, or take silently.
        _in_range(prefix + "base_lr", self.base_lr, "a positive learning rate, e.g. 0.02", low=0, low_open=True)
        _in_range(prefix + "momentum", self.momentum, "in [0, 1), e.g. 0.9", low=0, high=1)
        for i, beta in enumerate(self.betas):
            _in_range(f"{prefix}betas[{i}]", beta, "in [0, 1), e.g. [0.9, 0.999]", low=0, high=1)
        if len(self.betas) != 2:
            raise ConfigError(f"{prefix}betas: AdamW takes two values, e.g. [0.9, 0.999], got {self.betas}")
        _in_range(prefix + "weight_decay", self.weight_decay, "at least 0, e.g. 1e-4", low=0)
        _in_range(prefix + "gamma", self.gamma, "the LR factor at each step, in (0, 1], e.g. 0.1",
                  low=0, low_open=True, high=1, high_open=False)
        _in_range(prefix + "warmup_factor", self.warmup_factor, "the LR fraction warm-up starts at, in (0, 1]",
                  low=0, low_open=True, high=1, high_open=False)
        _in_range(prefix + "min_lr_factor", self.min_lr_factor, "a fraction of base_lr, in [0, 1]",
                  low=0, high=1, high_open=False)
        _in_range(prefix + "poly_power", self.poly_power, "a positive exponent, e.g. 0.9", low=0, low_open=True)
        _in_range(prefix + "ema_decay", self.ema_decay, "in (0, 1), e.g. 0.9998", low=0, low_open=True, high=1)
        for name in ("warmup_iters", "max_epochs", "reference_batch", "plateau_patience", "plateau_threshold",
                     "clip_grad"):
            _in_range(prefix + name, getattr(self, name), "at least 0 (0 turns it off)", low=0)
        if self.nesterov and self.optimizer == "SGD" and self.momentum == 0:
            raise ConfigError(f"{prefix}nesterov: Nesterov momentum needs solver.momentum > 0 (got 0); "
                              "set a momentum or nesterov=false")
        bad_steps = [s for s in self.steps if s < 1]
        if bad_steps:
            raise ConfigError(f"{prefix}steps: milestones are iterations, at least 1, got {self.steps}")
        if self.lr_schedule == "step" and len(self.steps) != 1:
            raise ConfigError(f"{prefix}steps: the step schedule takes one period, e.g. steps: [30000]")
        if list(self.steps) != sorted(self.steps):
            raise ConfigError(f"{prefix}steps: milestones must increase, got {self.steps}")


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


# ``data.num_workers`` of every task: an int, or "auto" (engine.hardware.choose_num_workers: loader
# workers and compute threads together never oversubscribe the cores).
Workers = Union[int, str]


def check_workers(key: str, value) -> None:
    """For the data configs' ``validate()``: ``value`` is "auto" or an int >= 0."""
    if isinstance(value, str):
        if value != "auto":
            raise ConfigError(f"{key}: '{value}' is not a valid value (an integer >= 0 or auto)")
    elif value < 0:
        raise ConfigError(f"{key}: must be at least 0 or auto, got {value}")


@dataclass
class TestConfig:
    eval_period: int = 0  # 0: evaluate only at the end
    ims_per_batch: int = 8  # global
    report: bool = True  # the final evaluation writes output_dir/report/index.html (engine.report)
    report_max_mb: float = 20.0  # bound on the report's images; further ones are left out, with a note


@dataclass
class LoggingConfig:
    log_period: int = 20
    tensorboard: bool = True
    progress_bar: bool = True


GRAD_REDUCE_CHOICES = ("auto", "gloo", "shared_memory")  # dist.grad_reduce (engine.grad_reduce)


@dataclass
class DistConfig:
    """How ranks talk under torchrun (engine.dist.init_distributed reads it)."""
    backend: str = "auto"  # auto: nccl when the process drives a GPU, gloo on CPUs | nccl | gloo
    timeout: float = 1800.0  # seconds a collective may wait for the other ranks before failing
    # auto: CPU ranks on one machine average gradients in shared memory (engine.grad_reduce), others
    # through the backend | gloo: DDP's own all-reduce | shared_memory: insist (stop where impossible)
    grad_reduce: str = "auto"

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "backend", self.backend, ["auto", "nccl", "gloo"])
        choice(prefix + "grad_reduce", self.grad_reduce, GRAD_REDUCE_CHOICES)
        if self.timeout <= 0:
            raise ConfigError(f"{prefix}timeout: seconds, must be positive, got {self.timeout}")


@dataclass
class RunConfig:
    """The header every task config shares (detection.config.DetConfig, segmentation.config.SegConfig,
    classification.config.ClsConfig extend it, overriding defaults such as ``solver`` or ``output_dir``
    and adding ``model`` and ``data``). engine.trainer.Trainer needs no more than this."""
    output_dir: str = "runs/run"
    seed: int = 0
    deterministic: bool = False
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    dist: DistConfig = field(default_factory=DistConfig)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


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


def overridden_keys(cfg) -> frozenset:
    """The keys ``load_config`` set from overrides (the command line): ``{"solver.max_iter", ...}``."""
    return getattr(cfg, "_overridden", frozenset())


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


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg, path: str) -> None:
    """Write the resolved config (what actually ran) next to the run's outputs."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg))


def choice(key: str, value: str, valid: Sequence[str]) -> None:
    """Raise ConfigError unless ``value`` is one of ``valid``; for ``validate()`` methods."""
    if value not in valid:
        close = difflib.get_close_matches(str(value), list(valid), n=3, cutoff=0.4)
        hint = f"closest valid: {', '.join(close)}" if close else f"valid: {', '.join(valid)}"
        raise ConfigError(f"{key}: '{value}' is not a valid value ({hint})")
