"""What the hardware decides: numeric precision, memory layout and threads, each with its reason.

The defaults (``solver.amp: auto``, ``solver.channels_last: auto``, ``data.num_workers: auto``) must
be right on an AVX2 laptop, an AVX512/AMX server and any GPU, so they are chosen here from what the
machine can do natively, and every run prints the choice and the reason (docs/ARCHITECTURE.md).

* Precision. bf16 autocast where the hardware computes bf16 natively: CUDA GPUs that support it
  (compute capability 8.0 and newer) and CPUs whose oneDNN has native bf16 kernels (AVX512-BF16 or
  AMX). Older GPUs get fp16 with the grad scaler. Every other CPU gets fp32: there bf16 is emulated,
  and on a 2-core AVX2 machine a ResNet training step ran 7x slower in bf16 than in fp32.
* Memory layout. channels-last pays where convolutions run on tensor cores (CUDA with fp16/bf16,
  compute capability 7.0 and newer). On the CPU, training stays in the default layout: there our
  R50-FPN training step was slower channels-last (benchmarks/RESULTS.md); inference on the CPU takes
  its own layout in the fast path (:func:`backbones.fast.prepare_for_inference`).
* Threads. ``OMP_NUM_THREADS`` set by the user wins. Otherwise the cores this process may use
  (its CPU affinity, shared among the local ranks) go to the loader workers first and the rest to
  compute, so that workers plus compute threads never oversubscribe the cores.

The CPU checks follow ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``, so a newer CPU can stand in
for a plain AVX2 one (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from . import threads as _threads  # noqa: F401  OMP_WAIT_POLICY, for library users who import us first
from .config import ConfigError

__all__ = ["Precision", "cpu_capability", "cpu_native_bf16", "choose_precision", "choose_channels_last",
           "usable_cores", "choose_num_workers", "resolve_num_workers", "apply_thread_policy",
           "describe_device", "HardwarePlan", "plan_run", "autocast"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    reason: str

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or None for fp32 (autocast off)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def grad_scaler(self) -> bool:
        return self.name == "fp16"


def cpu_capability() -> str:
    """ATen's kernel level for this CPU ("AVX2", "AVX512", ...); follows ``ATEN_CPU_CAPABILITY``."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_native_bf16() -> bool:
    """True where bf16 matrix kernels run natively: AVX512 kernels with AVX512-BF16 or AMX, and a
    oneDNN that may use them (``ONEDNN_MAX_CPU_ISA`` below AVX512-BF16 turns them off)."""
    if not cpu_capability().startswith("AVX512"):
        return False
    cpu = torch.cpu
    has_isa = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = False
    return bool(has_isa and onednn_bf16)


def _cpu_words() -> str:
    cap = cpu_capability()
    if cpu_native_bf16():
        return f"CPU capability {cap} with native bf16"
    return f"CPU capability {cap}"


def resolve_device(name: Optional[str] = None) -> torch.device:
    """The device a predictor or tool runs on: ``name`` ("cpu", "cuda", "cuda:1", "mps") checked
    against this machine, or the first GPU when there is one and the CPU otherwise (``None``). A
    device the machine lacks stops with one line (a ConfigError) instead of the driver's traceback
    at the first tensor moved there."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{name}': not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device '{name}': no CUDA GPU is visible to this process (no GPU, no driver, "
                              "or CUDA_VISIBLE_DEVICES hides it); use --device cpu, or leave --device out to "
                              "take a GPU when there is one")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device '{name}': this process sees {count} GPU{'s' if count > 1 else ''} "
                              f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device '{name}': Apple's MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device '{name}': not supported here; use cpu, cuda, cuda:N or mps")
    return device


def describe_device(device: torch.device) -> str:
    """One phrase for logs and benchmarks: the GPU's name or the CPU's capability."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"GPU {torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    return _cpu_words()


def choose_precision(setting: str, device: torch.device) -> Precision:
    """``setting`` is ``solver.amp``: auto | off | bf16 | fp16. Explicit values are kept as given."""
    if setting == "off":
        return Precision("fp32", "solver.amp=off")
    if setting in ("bf16", "fp16"):
        return Precision(setting, f"solver.amp={setting}")
    if setting != "auto":
        raise ValueError(f"solver.amp: '{setting}' is not one of auto, off, bf16, fp16")
    where = describe_device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"{where}: native bf16 -> bf16")
        return Precision("fp16", f"{where}: no bf16 -> fp16 with the grad scaler")
    if device.type == "cpu" and cpu_native_bf16():
        return Precision("bf16", f"{where} -> bf16")
    return Precision("fp32", f"{where}: no native bf16 -> fp32")


def choose_channels_last(setting, device: torch.device, precision: Precision) -> tuple:
    """``(use_channels_last, reason)`` for training; ``setting`` is True, False or "auto"."""
    if setting is True or setting == "true":
        return True, "solver.channels_last=true"
    if setting is False or setting == "false":
        return False, "solver.channels_last=false"
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device.index if device.index is not None else None)
        if precision.name in ("bf16", "fp16") and major >= 7:
            return True, "tensor cores with fp16/bf16 prefer channels-last"
        return False, "no tensor-core precision: default layout"
    if precision.name == "bf16":
        # oneDNN's bf16 convolutions: channels-last trained the demo's networks faster (ResNet-18 at
        # width 48: classifier 0.092 vs 0.101 s a step, semantic FPN 0.212 vs 0.258, AVX512-BF16)
        return True, "CPU bf16 training: channels-last measured faster (benchmarks/RESULTS.md)"
    return False, "CPU fp32 training: channels-last measured slower (benchmarks/RESULTS.md)"


def usable_cores(local_world_size: Optional[int] = None) -> int:
    """The cores this process may use: its CPU affinity shared among the ranks of this node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local_world_size))


def choose_num_workers(setting, cores: int, device: torch.device) -> int:
    """``data.num_workers``: an int is kept; "auto" gives a quarter of the cores to loading (at most
    8), none below four cores on the CPU, where a worker would take a core from compute, and at
    least one with a GPU, which leaves the CPU cores to loading."""
    if setting != "auto":
        return int(setting)
    if device.type == "cuda":
        return max(1, min(8, cores // 2))
    return min(8, cores // 4)


def resolve_num_workers(setting, device: Optional[torch.device] = None) -> int:
    """``data.num_workers`` as an int, for this process (what every loader of a run uses)."""
    if setting != "auto":
        return int(setting)
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return choose_num_workers(setting, usable_cores(), device)


def apply_thread_policy(num_workers: int, cores: Optional[int] = None) -> tuple:
    """Set torch's intra-op threads; returns ``(threads, reason)``. ``OMP_NUM_THREADS`` wins."""
    user = os.environ.get("OMP_NUM_THREADS")
    if user and user.strip().isdigit() and int(user) > 0:
        threads, reason = int(user), "OMP_NUM_THREADS set by the user"
    else:
        cores = cores or usable_cores()
        threads = max(1, cores - num_workers)
        reason = f"{cores} usable cores - {num_workers} loader workers"
    torch.set_num_threads(threads)
    return threads, reason


@dataclass(frozen=True)
class HardwarePlan:
    """What a run chose for this machine, with the reasons; printed at start and written to
    ``output_dir/hardware.json`` (:meth:`as_dict`)."""
    device: str  # describe_device: the GPU's name or the CPU capability
    precision: Precision
    channels_last: bool
    layout_reason: str
    num_workers: int
    workers_reason: str
    threads: int
    threads_reason: str

    def lines(self) -> list:
        layout = "channels-last" if self.channels_last else "default (NCHW)"
        return [f"device: {self.device}",
                f"precision: {self.precision.name} ({self.precision.reason})",
                f"memory layout: {layout} ({self.layout_reason})",
                f"loader workers: {self.num_workers} ({self.workers_reason}); compute threads: {self.threads} "
                f"({self.threads_reason}; OMP_WAIT_POLICY={_threads.wait_policy() or 'unset'})"]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["precision"] = self.precision.name
        out["precision_reason"] = self.precision.reason
        out["cpu_capability"] = cpu_capability()
        out["omp_wait_policy"] = _threads.wait_policy()
        return out

    def log(self, log: logging.Logger = logger) -> None:
        for line in self.lines():
            log.info(line)


def plan_run(amp, channels_last, num_workers, device: torch.device, apply_threads: bool = True) -> HardwarePlan:
    """Every hardware choice of a run (training or inference) from its settings: ``solver.amp``,
    ``solver.channels_last`` and ``data.num_workers``, each "auto" or a forced value. Sets torch's
    compute threads unless ``apply_threads`` is False."""
    precision = choose_precision(amp, device)
    use_cl, layout_reason = choose_channels_last(channels_last, device, precision)
    workers = resolve_num_workers(num_workers, device)
    cores = usable_cores()
    if num_workers == "auto":
        workers_reason = f"data.num_workers=auto: {cores} usable cores on the {device.type.upper()}"
    else:
        workers_reason = f"data.num_workers={num_workers}"
    if apply_threads:
        threads, threads_reason = apply_thread_policy(workers, cores)
    else:
        threads, threads_reason = torch.get_num_threads(), "left as they were"
    return HardwarePlan(describe_device(device), precision, use_cl, layout_reason, workers, workers_reason,
                        threads, threads_reason)


def autocast(device: torch.device, precision: Precision):
    """``torch.autocast`` for ``precision`` (a no-op context for fp32)."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)
