"""Distributed helpers over ``torch.distributed``, initialised from the environment torchrun sets.

``torchrun --nproc_per_node=N tools/train_x.py ...`` (and ``--nnodes`` / ``--rdzv_*`` for several
machines) exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init_distributed`
reads them. Without torchrun everything below works as a world of one process, with no process group.
Backend: NCCL when the process drives a GPU, gloo on CPUs, unless the config's ``dist.backend`` says.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def get_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", get_local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> NCCL when the process drives a GPU, gloo on CPUs; ``nccl`` / ``gloo`` as asked."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"dist.backend: '{backend}' is not one of auto, nccl, gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("dist.backend: nccl needs a CUDA GPU per rank; use gloo (or auto) on CPUs")
    return backend


def init_distributed(backend: str = "auto", timeout: float = 1800.0) -> torch.device:
    """Join the process group torchrun describes (no-op without torchrun) and return this rank's device.

    ``backend`` and ``timeout`` (seconds a collective waits for the other ranks) are the config's
    ``dist`` section (engine.config.DistConfig). The rendezvous is torchrun's environment (env://:
    RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). The Trainer calls it; a tool that needs ranks
    before building its task may call it first (calling it twice is safe).
    """
    device = get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and all_gather_object use the current device
    if is_dist() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return device
    backend = resolve_backend(backend, device)
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout), **kwargs)
    return device


def destroy_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor on the input's device)."""
    if get_world_size() == 1:
        return tensor.clone()
    t = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(tensor.device)


def all_reduce_mean(values: Dict[str, float]) -> Dict[str, float]:
    """Mean of each value over all ranks; every rank must pass the same keys."""
    if get_world_size() == 1 or not values:
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    t = reduce_sum_tensor(t) / get_world_size()
    return dict(zip(keys, t.tolist()))


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm when training on several GPUs (``norm: SyncBN``).

    SyncBatchNorm only runs on CUDA; in a world of one process or on CPUs it would compute the same
    statistics as BatchNorm (or fail), so the model is returned unchanged there.
    """
    if get_world_size() > 1 and get_device().type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
