"""A torchrun worker ends when its agent dies.

torchrun starts each worker in a session of its own, so a SIGKILL of the agent (``kill -9``, the OOM
killer, a scheduler that signals only the job's first process) reaches no worker: they trained on,
evaluated and wrote ``model_final.pth`` after the shell had reported exit 137, and on a GPU machine
kept holding the GPUs. :func:`exit_with_agent` makes a worker watch its parent, the agent, and end
within a second of its death (docs/distributed.md, "When the agent dies").

A thread rather than ``prctl(PR_SET_PDEATHSIG)``: the signal would end the process in the middle of a
checkpoint write without a word, where the thread says why, lets a write in progress finish (atomic
writes already leave no half file; this keeps the newest one) and ends the worker's loader workers at
once instead of in their 5 s watchdog period. The thread polls ``os.getppid()``, which changes the
moment the agent dies (the worker is re-parented to init or a subreaper).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from typing import Optional

from .checkpoint import CHECKPOINT_WRITE

__all__ = ["agent_gone", "exit_with_agent", "stop_for_lost_agent", "under_torchrun"]

POLL_SECONDS = 0.25
CHECKPOINT_GRACE_SECONDS = 5.0  # how long a checkpoint being written may take to finish
_WATCH: Optional[threading.Thread] = None
_AGENT: Optional[int] = None
_STOPPING = threading.Lock()


def under_torchrun() -> bool:
    """True in a worker that torchrun's agent started (the agent exports TORCHELASTIC_RUN_ID)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def exit_with_agent() -> bool:
    """In a torchrun worker, start (once) the thread that ends this process when its agent is gone:
    one ``error:`` line on stderr, a checkpoint write in progress allowed to finish (at most
    CHECKPOINT_GRACE_SECONDS), loader workers killed, exit code 1. Returns whether a watch runs.

    A no-op outside torchrun: a plain run outlives the shell that started it (``nohup``) as before.
    engine.launch.run_tool and the Trainer call it; calling it again does nothing."""
    global _WATCH, _AGENT
    if _WATCH is not None:
        return True
    if not under_torchrun() or not sys.platform.startswith("linux"):
        return False
    _AGENT = os.getppid()
    _WATCH = threading.Thread(target=_watch, name="reskit-agent-watch", daemon=True)
    _WATCH.start()
    return True


def agent_gone(wait: float = 0.0) -> bool:
    """Whether the watched agent has died, waiting up to ``wait`` seconds for it to show.

    A collective often fails *because* the agent died: its death closes the rendezvous store's socket,
    or a peer rank's watch ended that peer first. The kernel closes a dying process's sockets before it
    re-parents its children, so the failure can be seen a moment before ``getppid()`` changes;
    engine.launch waits briefly here so that such a failure is told as the agent's death."""
    if _AGENT is None:
        return False
    deadline = time.monotonic() + wait
    while os.getppid() == _AGENT:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _watch() -> None:
    while os.getppid() == _AGENT:
        time.sleep(POLL_SECONDS)
    stop_for_lost_agent()


def stop_for_lost_agent() -> None:
    """Say that the agent is gone, let a checkpoint write finish, end the loader workers, exit 1.
    Called by the watch thread or by engine.launch on a collective that failed for that reason;
    whichever comes second blocks until the first ends the process, so the line is written once."""
    _STOPPING.acquire()
    print(f"error: rank {os.environ.get('RANK', '?')}: the torchrun agent that started this worker "
          f"(pid {_AGENT}) is gone; stopping this worker (the checkpoints on disk are complete: "
          "continue with --resume)", file=sys.stderr, flush=True)
    CHECKPOINT_WRITE.acquire(timeout=CHECKPOINT_GRACE_SECONDS)  # kept: no new write starts
    for child in multiprocessing.active_children():  # DataLoader workers
        try:
            child.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - nobody reads the other end any more
        pass
    os._exit(1)
