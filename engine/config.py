"""Typed experiment configs: YAML files validated against dataclasses.

A config file is YAML. ``_base_: other.yaml`` (or a list of files, paths relative to the file that
names them) is loaded first and the file's own keys are merged over it; ``key.sub=value`` overrides
from the command line are merged last. The merged tree is then checked against the task's dataclass
schema: an unknown key or a value of the wrong type raises :class:`ConfigError`, whose message is one
line naming the key and the closest valid names. Tools turn it into exit code 2 before any work.

OmegaConf does the YAML loading, the merging and ``${...}`` interpolation. The type check is ours:
OmegaConf's structured merge casts silently (``name: 3`` becomes ``"3"``) and loses the path of keys
inside lists of dataclasses, and we want one line that names the full key.

Where it lives: the shared sections (``RunConfig`` and the rest) here; ConfigError and the strict
dict -> dataclass check in :mod:`engine.config_validate`; reading YAML, ``_base_``, overrides and
writing ``config.yaml`` in :mod:`engine.config_load`. Every name stays importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Union

from .config_load import load_config, overridden_keys, save_config, to_dict, to_yaml
from .config_validate import ConfigError, ForeignConfigError, _in_range, choice, from_dict, unknown_keys

__all__ = ["ConfigError", "ForeignConfigError", "SolverConfig", "TestConfig", "LoggingConfig", "DistConfig",
           "RunConfig", "Workers", "check_workers", "GRAD_REDUCE_CHOICES", "choice", "from_dict", "unknown_keys",
           "load_config", "overridden_keys", "save_config", "to_dict", "to_yaml"]


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
