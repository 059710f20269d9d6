"""Writing a run's checkpoints and resuming from them: atomic writes (a reader sees the old file or the
complete new one; a full disk is one line), the :class:`Checkpointer` of ``output_dir/checkpoints``
(rotation, the newest file that loads), and the RNG states in a ``weights_only``-safe form. Part of
:mod:`engine.checkpoint`, which re-exports every name here.
"""
from __future__ import annotations

import glob
import os
import random
import re
import tempfile
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .checkpoint_read import load_checkpoint
from .data import DataError

_NAME = re.compile(r"model_(\d{7,})\.pth$")


def _file_mode() -> int:
    # mkstemp creates files readable by the owner only; give the checkpoint the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms / filesystems cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Held while a checkpoint is written: a worker whose torchrun agent died waits for it before it
# ends (engine.dist.exit_with_agent), so the write in progress completes instead of being cut.
CHECKPOINT_WRITE = threading.Lock()


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the complete new one.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    ``os.replace`` swaps the name (atomic on POSIX within one filesystem) and the directory is fsynced
    so the rename itself survives a power cut.
    """
    with CHECKPOINT_WRITE:
        _save_checkpoint(path, state)


def _save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + ".")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        problem = _write_problem(e, directory)
        if problem is None:
            raise
        raise DataError(f"{path}: cannot write the checkpoint: {problem}") from None
    _fsync_dir(directory)


def _write_problem(e: BaseException, directory: str) -> Optional[str]:
    """The user's words for a failed checkpoint write, or None when it is not a disk problem.
    torch.save reports a full disk from its C++ zip writer as a RuntimeError ("enforce fail at
    inline_container.cc ... file write failed"), not as an OSError."""
    import errno
    import shutil

    text = str(e)
    if isinstance(e, OSError) or (isinstance(e, RuntimeError) and ("inline_container" in text
                                                                     or "PytorchStreamWriter" in text)):
        code = getattr(e, "errno", None)
        if code in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"{e.strerror}; choose a writable output_dir"
        mount = os.path.abspath(directory)
        while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
            mount = os.path.dirname(mount)
        where = f"the disk mounted at {mount}"
        try:
            usage = shutil.disk_usage(directory)
            where += f" ({usage.free / 2**20:.0f} MiB free of {usage.total / 2**30:.1f} GiB)"
        except OSError:
            pass
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
        return f"{reason}; {where} is full or failing: free space there or move output_dir to another disk"
    return None


class Checkpointer:
    """``output_dir/checkpoints/model_{iteration:07d}.pth``, keeping the newest ``keep``."""

    def __init__(self, output_dir: str, keep: int = 3):
        self.directory = os.path.join(output_dir, "checkpoints")
        self.keep = keep

    def path_for(self, iteration: int) -> str:
        return os.path.join(self.directory, f"model_{iteration:07d}.pth")

    def all(self) -> List[Tuple[int, str]]:
        """``(iteration, path)`` of the checkpoint files present, oldest first."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "model_*.pth")):
            m = _NAME.search(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found)

    def save(self, iteration: int, state: Dict[str, Any]) -> str:
        path = self.path_for(iteration)
        try:
            save_checkpoint(path, state)
        except DataError as e:  # a full disk: say which checkpoint is still good (older ones are kept)
            kept = [p for _, p in self.all()]
            raise DataError(f"{e}; the last good checkpoint, {kept[-1]}, is kept" if kept else
                            f"{e}; no checkpoint was written yet") from None
        # Older ones go only once the new one is safely on disk.
        for _, old in self.all()[:-self.keep]:
            try:
                os.remove(old)
            except OSError:
                pass
        return path

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes a crash interrupted."""
        for tmp in glob.glob(os.path.join(self.directory, ".tmp-*")):
            try:
                os.remove(tmp)
            except OSError:
                pass

    def load_latest(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(path, state)`` of the newest checkpoint that loads, or None. A newest file that is
        truncated or corrupt (a crash while it was copied, a full disk) is skipped with a warning."""
        for _, path in reversed(self.all()):
            try:
                return path, load_checkpoint(path)
            except Exception as e:  # truncated zip, bad pickle: any failure means "not usable"
                warnings.warn(f"skipping unreadable checkpoint {path} ({type(e).__name__}: {e}); "
                              "falling back to the previous one", stacklevel=2)
        return None

    def latest(self) -> Optional[str]:
        """Path of the newest checkpoint that loads, or None."""
        found = self.load_latest()
        return None if found is None else found[0]

    def load(self, path: str) -> Dict[str, Any]:
        return load_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# RNG states in weights_only-safe form
# --------------------------------------------------------------------------------------------------


def get_rng_state() -> Dict[str, Any]:
    """Every RNG a training step may draw from: python ``random``, numpy's global RNG, torch CPU and
    the current CUDA device."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's GPU only: reading every GPU's state would open a context on each of them.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # the current device's
