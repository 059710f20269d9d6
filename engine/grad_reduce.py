"""Gradient averaging for CPU training on one machine: through shared memory instead of gloo's sockets.

DDP averages the gradients of every step with an all-reduce. On CPUs that is gloo's, which moves every
byte through TCP loopback sockets: copies into and out of the kernel and a reduction, all on the cores
that should be computing (there are no spare ones: each rank keeps its core busy). The gloo bundled with
torch 2.14 has no shared-memory path for ranks on one machine (upstream gloo gained one in 2025,
pytorch/gloo#458), so this module gives DDP one as a communication hook
(``DistributedDataParallel.register_comm_hook``, the documented way to replace its all-reduce):

* a bucket goes in chunks of at most ``CHUNK`` gradients (16 MB): each rank copies a chunk into its own
  slot of a file in ``/dev/shm`` that every rank maps;
* a gloo barrier on a group of its own;
* every rank sums all slots in rank order into its bucket and divides by the world size.

Every rank computes the same sum in the same order, so the ranks' gradients stay bitwise equal; with two
ranks they are also bitwise those of gloo's all-reduce (``(a + b) / 2`` and DDP's ``a / 2 + b / 2`` are
the same numbers: halving is exact). Consecutive chunks alternate between two halves of the file, so a
rank writes chunk k + 2 into the half that chunk k used only after the barrier of chunk k + 1, which no
rank reaches before it has finished reading chunk k. The file therefore holds
``2 x world size x CHUNK`` floats whatever the model (64 MB for two ranks), not a copy of every
gradient per rank (it did: 198 MB for two ranks of the COCO benchmark's ResNet-18 Mask R-CNN, 700 MB
for a ResNet-50 one). The file is unlinked as soon as every rank has mapped it: nothing is left behind
when a run ends or dies.

Measured on a 2-core AMD EPYC under the AVX2 emulation, two one-thread ranks, interleaved 50-step runs
(docs/speed.md): the demo's classifier step 0.166-0.172 s against 0.171-0.188 s with gloo, the Mask
R-CNN step 0.355-0.361 s against 0.370-0.384 s.

``dist.grad_reduce: auto`` (the default) takes this path for CPU ranks that all run on this machine when
``/dev/shm`` has room for its ``2 x world size x min(CHUNK, trainable parameters)`` floats; ``gloo`` keeps DDP's own
all-reduce; ``shared_memory`` insists (and stops with the reason where it cannot). Every rank ends up
on the same path: they agree before the first step, and the run's log says which was taken and why.
"""
from __future__ import annotations

import os
import secrets
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .config import GRAD_REDUCE_CHOICES, ConfigError, choice
from .dist import all_gather_object, broadcast_object

__all__ = ["SharedMemoryAverager", "choose_grad_reduce", "install_grad_reduce"]

SHM_DIR = "/dev/shm"
_HEADROOM = 64 << 20  # leave this much of /dev/shm free for everything else (loader workers use it too)
CHUNK = 4 << 20  # gradients a slot holds (16 MB of float32): a bucket larger than this goes in pieces


def slot_numel(numel: int) -> int:
    """Gradients one slot holds for a model of ``numel`` trainable parameters."""
    return max(1, min(int(numel), CHUNK))


def _shm_free_bytes() -> int:
    try:
        st = os.statvfs(SHM_DIR)
    except (OSError, AttributeError):  # no /dev/shm (not Linux)
        return -1
    return st.f_bavail * st.f_frsize


def choose_grad_reduce(setting: str, device: torch.device, backend: str, world_size: int, local_world_size: int,
                       numel: int, shm_free: int) -> Tuple[str, str]:
    """``(path, reason)``: ``"shared_memory"`` or ``"default"`` (the backend's own all-reduce) for
    ``dist.grad_reduce`` = ``setting``, ranks of ``backend`` on ``device``, ``numel`` gradients and
    ``shm_free`` bytes free in /dev/shm (-1: there is none). Raises ConfigError when ``shared_memory``
    is asked for and cannot be had."""
    choice("dist.grad_reduce", setting, GRAD_REDUCE_CHOICES)
    if world_size <= 1:
        return "default", "one process"
    if setting == "gloo":
        return "default", f"{backend} all-reduce (dist.grad_reduce=gloo)"
    need = 2 * world_size * slot_numel(numel) * 4
    problem = None
    if device.type != "cpu" or backend != "gloo":
        problem = f"the ranks run on {device.type.upper()} with {backend}; shared memory is for CPU ranks"
    elif local_world_size != world_size:  # torchrun: LOCAL_WORLD_SIZE ranks on this machine
        problem = f"{world_size - local_world_size} of the {world_size} ranks run on other machines"
    elif shm_free < 0:
        problem = f"no {SHM_DIR} on this system"
    elif shm_free < need + _HEADROOM:
        problem = (f"{SHM_DIR} has {shm_free >> 20} MB free, {(need + _HEADROOM) >> 20} MB needed "
                   f"(2 x {world_size} ranks x {slot_numel(numel)} gradients, and headroom)")
    if problem is None:
        return "shared_memory", (f"{world_size} CPU ranks on this machine: each bucket averaged in {SHM_DIR} "
                                 f"({need >> 20} MB) instead of through gloo's sockets")
    if setting == "shared_memory":
        raise ConfigError(f"dist.grad_reduce=shared_memory: {problem}; use auto or gloo")
    return "default", f"{backend} all-reduce ({problem})"


class SharedMemoryAverager:
    """The comm hook's state: the mapped slots and this step's position in them (docstring above).

    Build it on every rank at the same moment (it runs collectives): ``numel`` is the number of
    gradients DDP reduces (the trainable parameters); ``chunk``, the gradients a slot holds (default
    :func:`slot_numel`; tests make it small so that buckets span several chunks)."""

    def __init__(self, numel: int, group: Optional[dist.ProcessGroup] = None, chunk: Optional[int] = None):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.numel = int(numel)
        # A group of its own: the barriers never queue behind other collectives of the default group.
        self.group = dist.new_group(backend="gloo") if group is None else group
        name = broadcast_object(f"reskit-grads-{os.getpid()}-{secrets.token_hex(8)}" if self.rank == 0 else None)
        path = os.path.join(SHM_DIR, name)
        self.chunk = slot_numel(self.numel) if chunk is None else int(chunk)
        size = 2 * self.world * self.chunk
        try:
            if self.rank == 0:
                with open(path, "wb") as f:
                    f.truncate(size * 4)
            dist.barrier(group=self.group)
            slots = torch.from_file(path, shared=True, size=size, dtype=torch.float32)
            dist.barrier(group=self.group)  # every rank has mapped it: the name is no longer needed
        finally:
            if self.rank == 0 and os.path.exists(path):
                os.unlink(path)
        self.slots = slots.view(2, self.world, self.chunk)
        self.half = 1

    def hook(self, _state, bucket):  # no annotations: DDP checks them, and this module's are strings
        """Average ``bucket`` (a ``dist.GradBucket``) over the ranks, in place; returns a completed
        Future of it (``register_comm_hook(averager, averager.hook)``)."""
        buffer = bucket.buffer()
        if buffer.dtype != torch.float32:
            raise RuntimeError(f"shared-memory gradient averaging: bucket {bucket.index()} holds "
                               f"{buffer.dtype} gradients, the slots float32 ones; set dist.grad_reduce=gloo")
        flat = buffer.view(-1)
        for start in range(0, flat.numel(), self.chunk):
            self._average(flat[start:start + self.chunk])
        done: torch.futures.Future = torch.futures.Future()
        done.set_result(buffer)
        return done

    def _average(self, piece: torch.Tensor) -> None:
        self.half = 1 - self.half  # every rank alternates in step: the same chunks in the same order
        slots = self.slots[self.half, :, :piece.numel()]
        slots[self.rank].copy_(piece)
        dist.barrier(group=self.group)
        torch.add(slots[0], slots[1], out=piece)
        for r in range(2, self.world):
            piece.add_(slots[r])
        piece.div_(self.world)


def install_grad_reduce(ddp_model: nn.Module, setting: str, device: torch.device) -> str:
    """Register the shared-memory averaging on ``ddp_model`` (a DistributedDataParallel) when
    ``dist.grad_reduce`` = ``setting`` picks it here; returns what was taken and why, for the run's log
    and hardware.json. Collective: call it on every rank, right after wrapping the model."""
    numel = sum(p.numel() for p in ddp_model.module.parameters() if p.requires_grad)
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))
    path, reason = choose_grad_reduce(setting, device, dist.get_backend(), world, local, numel, _shm_free_bytes())
    # Every rank must take the same path (free space is read per rank): shared memory only if all can.
    everyone = all(all_gather_object(path == "shared_memory"))  # a collective: every rank calls it
    if path == "shared_memory" and not everyone:
        if setting == "shared_memory":
            raise ConfigError("dist.grad_reduce=shared_memory: another rank cannot map it (see its log); "
                              "use auto or gloo")
        path, reason = "default", "gloo all-reduce (another rank cannot use shared memory)"
    if path == "shared_memory":
        averager = SharedMemoryAverager(numel)
        ddp_model.register_comm_hook(averager, averager.hook)
    return reason
