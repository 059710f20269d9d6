"""Reading checkpoints safely: the dict in a torch file, on the CPU, without running code from it, or one
line naming the file and what it is instead; and what a checkpoint records (``meta``, its kind, its
weights). Part of :mod:`engine.checkpoint`, which re-exports every name here.
"""
from __future__ import annotations

import codecs
import os
import re
from typing import Any, Dict, Mapping, Optional

import torch

from .data import DataError

_REMEDY = "give weights saved as tensors only (a state dict, or a run's model_final.pth)"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _not_torch(head: bytes) -> Optional[str]:
    """What a file that torch.save did not write is, from its first bytes; None when it may be one
    (torch's zip format, or a pickle as torch.save wrote before 1.6)."""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array, not a PyTorch checkpoint"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras / TensorFlow weights?), not a PyTorch checkpoint"
    if len(head) > 9 and head[8:10] in (b'{"', b"{'"):
        return "a safetensors file, not a PyTorch checkpoint; give it a .safetensors name"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file, not a PyTorch checkpoint"
    try:  # final=False: the last bytes may cut a multi-byte character short
        text = b"\0" not in head and codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        text = False
    return "a text file, not a PyTorch checkpoint" if text else \
        "not a PyTorch checkpoint (neither torch's zip format nor a pickle)"


def read_checkpoint(path: str, remedy: str = _REMEDY) -> Dict[str, Any]:
    """The dict in the torch file ``path``, read on the CPU without executing code from it.

    Anything else raises :class:`engine.data.DataError` with one line naming the file, what it is
    (missing, empty, JSON, text, damaged, a pickle that would run code, ...) and ``remedy``.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file not found; check the path")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}); check its permissions") from None
    what = _not_torch(head)
    if what is not None:
        raise DataError(f"{path}: {what}; {remedy}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - each failure is told apart below, in the user's words
        text = str(e)
        code = _GLOBAL.search(text)
        if code:  # weights_only met a reference to a function or class: loading it would run code
            what = (f"holds Python objects beyond tensors and containers ('{code.group(1)}'); reading them "
                    "would run code from the file, so it is refused")
        elif head[:1] == b"\x80":
            what = "a plain Python pickle, not a file torch.save wrote"
        else:
            detail = text.splitlines()[0].split(". ")[0][:120] if text else "no detail"
            what = f"damaged or truncated ({type(e).__name__}: {detail})"
        raise DataError(f"{path}: {what}; {remedy}") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict; {remedy}")
    return ckpt


# The trainer's name for the same reading (its own checkpoints, resuming).
load_checkpoint = read_checkpoint


def checkpoint_meta(ckpt: Mapping) -> Dict[str, Any]:
    """The ``meta`` a checkpoint records ({} when it has none, e.g. a bare state dict)."""
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def checkpoint_kind(ckpt: Mapping) -> Optional[str]:
    """``meta["task"]``: one of :data:`KINDS` for our checkpoints, None when not recorded."""
    kind = checkpoint_meta(ckpt).get("task")
    return kind if isinstance(kind, str) else None


def checkpoint_state(ckpt: Mapping, prefer_ema: bool = False, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model weights of ``ckpt``: ``model_ema`` when asked for and present, else ``model``, else
    the dict itself when it is a bare state dict."""
    if prefer_ema and isinstance(ckpt.get("model_ema"), Mapping) and ckpt["model_ema"]:
        return dict(ckpt["model_ema"])
    if isinstance(ckpt.get("model"), Mapping):
        return dict(ckpt["model"])
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise DataError(f"{source}: no 'model' state dict in the checkpoint; {_REMEDY}")
