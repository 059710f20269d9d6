"""Distributed helpers over ``torch.distributed``, initialised from the environment torchrun sets.

``torchrun --nproc_per_node=N tools/train_x.py ...`` (and ``--nnodes`` / ``--rdzv_*`` for several
machines) exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init_distributed`
reads them. Without torchrun everything below works as a world of one process, with no process group.
Backend: NCCL when the process drives a GPU, gloo on CPUs, unless the config's ``dist.backend`` says.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError

logger = logging.getLogger(__name__)


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


def restart_count() -> int:
    """How many times torchrun's agent has restarted the worker group (TORCHELASTIC_RESTART_COUNT;
    0 on the first attempt and without torchrun). The Trainer resumes automatically when it is > 0."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


# NCCL's defaults let a rank whose peer died wait in a collective for the whole timeout and then
# exit without a word; these make the watchdog abort the communicator and end the process with the
# timed-out collective named (docs/distributed.md, "How to read a hang"). A value the user set wins.
NCCL_ENV = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a failed or timed-out collective tears the process down
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",  # ... after writing what each rank was waiting for (flight recorder)
    "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",  # the flight recorder's buffer (0 disables the dump)
}


def _nccl_environment() -> Dict[str, str]:
    """Set NCCL_ENV's variables the user left unset; returns the ones set here."""
    chosen = {}
    for key, value in NCCL_ENV.items():
        if key not in os.environ:
            os.environ[key] = chosen[key] = value
    return chosen


_STORE: Optional[Any] = None  # this attempt's store, to name the lost ranks after a failure
_TIMEOUT = 1800.0  # dist.timeout of this process group


def init_distributed(backend: str = "auto", timeout: float = 1800.0) -> torch.device:
    """Join the process group torchrun describes (no-op without torchrun) and return this rank's device.

    ``backend`` and ``timeout`` (seconds a collective or the store waits for the other ranks) are the
    config's ``dist`` section (engine.config.DistConfig). The rendezvous is torchrun's environment
    (env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), static or c10d. The Trainer calls it; a tool
    that needs ranks before building its task may call it first (calling it twice is safe).

    The store is prefixed with the restart count. torchrun's agent keeps one TCPStore for all
    attempts (static and c10d rendezvous alike) and a process group always writes its addresses under
    the same keys, so after an elastic restart the new workers would read the dead ones' gloo
    addresses and fail in connectFullMesh ("Connection refused"); each attempt now has keys of its own.
    """
    global _STORE, _TIMEOUT
    device = get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and all_gather_object use the current device
    if is_dist() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return device
    backend = resolve_backend(backend, device)
    if backend == "nccl":
        chosen = _nccl_environment()
        if chosen and int(os.environ.get("RANK", 0)) == 0:
            logger.info("NCCL error handling: " + ", ".join(f"{k}={v}" for k, v in chosen.items()) +
                        " (set them yourself to choose otherwise)")
    wait = datetime.timedelta(seconds=timeout)
    store, rank, world_size = next(dist.rendezvous("env://", timeout=wait))
    store.set_timeout(wait)
    _STORE = dist.PrefixStore(f"reskit/attempt_{restart_count()}", store)
    _TIMEOUT = timeout
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, store=_STORE, rank=rank, world_size=world_size,
                            timeout=wait, **kwargs)
    return device


# What a collective raises when a peer is gone: a DistError subclass, or a plain RuntimeError whose
# message comes from gloo or NCCL (".../gloo/transport/tcp/pair.cc: Connection reset by peer",
# "...gloo/...unbound_buffer.cc: Timed out waiting", "Watchdog caught collective operation timeout:
# WorkNCCL"), depending on the backend and the torch version. Not any "timed out": a DataLoader's
# timeout is not a peer's fault.
_PEER_ERROR_MARKS = ("gloo", "nccl", "c10d", "processgroup")


def is_peer_failure(error: BaseException) -> bool:
    """True for the error a collective raises when another rank died or stopped answering."""
    if not is_dist() or not isinstance(error, RuntimeError):
        return False
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return any(mark in text for mark in _PEER_ERROR_MARKS)


def lost_ranks(grace: Optional[float] = None) -> Optional[List[int]]:
    """After a failed collective: the ranks that do not answer a roll call within ``grace`` seconds
    (default: 5, or ``dist.timeout`` when shorter).

    Every surviving rank marks itself present in this attempt's store (which torchrun's agent hosts,
    so it outlives the workers) and waits for the others; the ranks never marked are the lost ones
    (dead, or hung in something other than a collective). None when the store itself is unreachable
    (its host is gone: node 0's agent, or rank 0 with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1).
    """
    if _STORE is None or not _store_host_answers():
        return None
    rank, world = get_rank(), get_world_size()
    grace = roll_call_seconds() if grace is None else grace
    try:
        _STORE.set(f"present/{rank}", "1")
        deadline = time.monotonic() + grace
        missing = [r for r in range(world) if r != rank]
        while missing and time.monotonic() < deadline:
            missing = [r for r in missing if not _STORE.check([f"present/{r}"])]
            if missing:
                time.sleep(0.1)
        return missing
    except Exception:  # noqa: BLE001 - an unreachable store is an answer too
        return None


def _store_host_answers(seconds: float = 2.0) -> bool:
    """Whether the store's host (MASTER_ADDR:MASTER_PORT) still accepts connections. Asked before the
    roll call: a TCPStore client whose server is gone prints a 13-frame C++ stack on stderr
    ("sendBytes failed ... Broken pipe") before it raises, which would come before the one line."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        return True  # not torchrun's env:// rendezvous: let the store answer for itself
    try:
        with socket.create_connection((addr, int(port)), timeout=seconds):
            return True
    except (OSError, ValueError):
        return False


def roll_call_seconds() -> float:
    return min(5.0, _TIMEOUT)


def peer_failure_message(error: BaseException, grace: Optional[float] = None) -> str:
    """One line for a collective that failed because a peer is gone, naming the lost ranks."""
    rank, world = get_rank(), get_world_size()
    grace = roll_call_seconds() if grace is None else grace
    # torchrun's agent SIGTERMs the workers as soon as it sees one fail (and SIGKILLs them 30 s later):
    # hold SIGTERM off for the few seconds of the roll call, so that this line gets written.
    held = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if held else None
    try:
        lost = lost_ranks(grace)
    finally:
        if held:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(first) > 200:
        first = first[:200] + "..."
    if lost is None:
        who = "the rendezvous store is unreachable (its host, node 0's torchrun agent, is gone)"
    elif lost:
        who = (f"lost rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} of {world} "
               f"(no answer within {grace:g} s: the process died, hung, or its node is gone)")
    else:
        who = "every rank still answers (a network fault between nodes?)"
    return (f"rank {rank}: a collective failed: {who}; {first}. Run torchrun with --max-restarts=N to "
            "restart the group and resume from the newest checkpoint (docs/distributed.md)")


def destroy_distributed() -> None:
    global _STORE
    if is_dist():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a group whose peers are gone may not shut down cleanly
            pass
    _STORE = None


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


# Items per rank and round of gather_to_main: a round brings rank 0 at most this many items of
# each rank (a COCO results record pickles to ~100 bytes for a box, a few hundred with an RLE mask).
GATHER_CHUNK_ITEMS = 16384


def gather_to_main(items: Sequence[Any], chunk_items: Optional[int] = None) -> List[Any]:
    """Every rank's ``items`` concatenated in rank order on rank 0; ``[]`` on the other ranks.

    Unlike ``all_gather_object``, no rank but 0 ever holds another rank's items, and rank 0 receives
    them in rounds of at most ``chunk_items`` (default :data:`GATHER_CHUNK_ITEMS`) items per rank,
    each round's pickled bytes freed once unpickled: rank 0's peak is one copy of the gathered
    items plus one round, not the world's pickled bytes on top of it (500,000 COCO detections of 8
    ranks). Every rank must call it; ranks may hold different numbers of items (a rank that has run
    out sends empty chunks). Built on ``torch.distributed.gather_object``, so it works over gloo and
    NCCL alike.
    """
    items = list(items) if not isinstance(items, list) else items
    world = get_world_size()
    if world == 1:
        return list(items)
    chunk = max(1, int(chunk_items or GATHER_CHUNK_ITEMS))
    longest = max(all_gather_object(len(items)))  # ints only: every rank needs the number of rounds
    rounds = -(-longest // chunk)
    rank = get_rank()
    parts: List[List[Any]] = [[] for _ in range(world)] if rank == 0 else []
    for start in range(0, rounds * chunk, chunk):
        received: Optional[List[Any]] = [None] * world if rank == 0 else None
        # rank 0 sends itself nothing: its own items join the result as they are
        dist.gather_object(items[start:start + chunk] if rank else [], received, dst=0)
        if rank == 0:
            for r in range(1, world):
                parts[r].extend(received[r])
            del received
    if rank != 0:
        return []
    parts[0] = items
    return [item for part in parts for item in part]


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
