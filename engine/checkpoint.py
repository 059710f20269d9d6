"""Checkpoints that survive crashes: atomic writes, the last few kept, corrupt ones skipped on resume.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` reads: tensors, numbers,
strings, lists and dicts only, so loading a file never runs code from it.
"""
from __future__ import annotations

import glob
import os
import random
import re
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

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


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the complete new one.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    ``os.replace`` swaps the name (atomic on POSIX within one filesystem) and the directory is fsynced
    so the rename itself survives a power cut.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint on the CPU without executing code from it."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
        save_checkpoint(path, state)
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
