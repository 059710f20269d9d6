"""Ctrl-C during training: finish the step, save a checkpoint, say how to resume.

A KeyboardInterrupt raised in the middle of an optimizer step would leave some parameters updated
and others not, so the first SIGINT only raises a flag; the trainer looks at it between steps
(:meth:`GracefulInterrupt.requested`, agreed over all ranks so that no rank waits for a step the
others will not take), writes the checkpoint of the last complete step and raises
:class:`TrainingInterrupted`, which ``engine.launch.run_tool`` turns into one line and exit code 130.
A second Ctrl-C interrupts at once. DataLoader workers forked while the guard is active inherit the
flag-raising handler, so they keep serving the step in progress instead of dying with a traceback.
"""
from __future__ import annotations

import shlex
import signal
import sys
import threading

__all__ = ["GracefulInterrupt", "TrainingInterrupted", "resume_command"]


class TrainingInterrupted(Exception):
    """Training stopped at the user's request after saving a checkpoint; the message says how to go on."""


def resume_command() -> str:
    """The command line of this process with ``--resume`` added (what the user types to continue)."""
    args = list(sys.argv)
    if "--resume" not in args:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in ["python"] + args)


class GracefulInterrupt:
    """``with GracefulInterrupt() as stop: ... if stop.requested(): ...``"""

    def __init__(self):
        self.flag = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.flag:  # the second Ctrl-C: the user means it
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def requested(self) -> bool:
        """True on every rank when any rank got Ctrl-C (a max over the ranks when there are several)."""
        from .dist import get_world_size, reduce_sum_tensor
        if get_world_size() == 1:
            return self.flag
        import torch
        return bool(reduce_sum_tensor(torch.tensor([float(self.flag)])).item() > 0)
