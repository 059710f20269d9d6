"""Ctrl-C during training: finish the step, save a checkpoint, say how to resume.

A KeyboardInterrupt raised in the middle of an optimizer step would leave some parameters updated
and others not, so the first SIGINT only raises a flag; the trainer looks at it between steps
(:meth:`GracefulInterrupt.requested`, agreed over all ranks so that no rank waits for a step the
others will not take), writes the checkpoint of the last complete step and raises
:class:`TrainingInterrupted`, which ``engine.launch.run_tool`` turns into one line and exit code 130.
A second Ctrl-C interrupts at once. DataLoader workers forked while the guard is active inherit the
flag-raising handler, so they keep serving the step in progress instead of dying with a traceback.

The first Ctrl-C says on the console what it does. Where there is no step to protect (the final
evaluation, after ``model_final.pth`` is written) :meth:`GracefulInterrupt.stop_at_once` makes the
first Ctrl-C stop at once with the message given, which names what was saved.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading

__all__ = ["GracefulInterrupt", "TrainingInterrupted", "resume_command", "eval_only_command"]


class TrainingInterrupted(Exception):
    """Training stopped at the user's request after saving a checkpoint; the message says how to go on."""


def resume_command() -> str:
    """The command line of this process with ``--resume`` added (what the user types to continue)."""
    args = list(sys.argv)
    if "--resume" not in args:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in ["python"] + args)


def eval_only_command() -> str:
    """The command line of this process with ``--eval-only`` instead of ``--resume``."""
    args = [a for a in sys.argv if a != "--resume"]
    if "--eval-only" not in args:
        args.append("--eval-only")
    return " ".join(shlex.quote(a) for a in ["python"] + args)


class GracefulInterrupt:
    """``with GracefulInterrupt() as stop: ... if stop.requested(): ...``"""

    def __init__(self):
        self.flag = False
        self._previous = None
        self._pid = None  # the process that entered; forked loader workers only raise the flag
        self._at_once: str = ""

    def stop_at_once(self, message: str) -> None:
        """From now on the first Ctrl-C stops at once with ``message`` (TrainingInterrupted):
        nothing is left half done (e.g. the final evaluation, after model_final.pth was written)."""
        self._at_once = message

    def _handler(self, signum, frame):
        main = os.getpid() == self._pid
        if main and self._at_once:
            self.__exit__()
            raise TrainingInterrupted(self._at_once)
        if self.flag:  # the second Ctrl-C: the user means it
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.flag = True
        if main:
            print("Ctrl-C: finishing the current step, then saving a checkpoint and stopping "
                  "(Ctrl-C again stops at once, losing the step)", file=sys.stderr, flush=True)

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._pid = os.getpid()
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None and os.getpid() == self._pid:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def requested(self) -> bool:
        """True on every rank when any rank got Ctrl-C (a max over the ranks when there are several)."""
        from .dist import get_world_size, reduce_sum_tensor
        if get_world_size() == 1:
            return self.flag
        import torch
        return bool(reduce_sum_tensor(torch.tensor([float(self.flag)])).item() > 0)
