"""Whole-detector weights: load a reskit detection checkpoint into a detector, and read its label space.

A detection checkpoint knows what it predicts: its ``meta`` holds ``category_ids`` (label i+1 is
category ``category_ids[i]``), ``class_names`` and ``input_norm``. Evaluation and prediction use that
label space when it is there, so a converted torchvision checkpoint (91 COCO outputs) or a model
fine-tuned on another dataset maps its labels back to the right ids whatever the config says.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from engine.data import DataError

logger = logging.getLogger(__name__)


@dataclass
class DetectorLoadReport:
    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}: {len(self.loaded)} tensors loaded"]
        for title, keys in (("missing (kept as initialised)", self.missing),
                            ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"  {len(keys)} {title}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        for key, want, got in self.mismatched:
            lines.append(f"  shape mismatch, kept as initialised: {key} model {want} file {got}")
        return "\n".join(lines)


def read_checkpoint(path: str) -> dict:
    """A reskit checkpoint as a dict; never executes code from the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise DataError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e}); "
                        "convert foreign weights with tools/transfer.py first") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def checkpoint_state(ckpt: dict, prefer_ema: bool = False) -> Dict[str, torch.Tensor]:
    if prefer_ema and isinstance(ckpt.get("model_ema"), dict):
        return ckpt["model_ema"]
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state dict
    raise DataError("checkpoint has no 'model' state dict")


_NBT = "num_batches_tracked"  # BN bookkeeping, absent from FrozenBN / GN models: never reported


def match_state(state: Dict[str, torch.Tensor], model: nn.Module, path: str,
                allow_mismatch: bool = True) -> Tuple[Dict[str, torch.Tensor], DetectorLoadReport]:
    """The tensors of ``state`` that fit ``model`` (same key, same shape) and the report of the rest.
    A shape mismatch is skipped and reported when ``allow_mismatch``, otherwise a DataError naming the key."""
    own = model.state_dict()
    report = DetectorLoadReport(path)
    usable = {}
    for key, value in state.items():
        if key not in own:
            if not key.endswith(_NBT):
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            if not allow_mismatch:
                raise DataError(f"{path}: '{key}' has shape {tuple(value.shape)}, the model expects "
                                f"{tuple(own[key].shape)}; check model.num_classes / arch")
            report.mismatched.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    skipped = {m[0] for m in report.mismatched}
    report.missing = [k for k in own if k not in usable and k not in skipped and not k.endswith(_NBT)]
    return usable, report


def load_detector_weights(model: nn.Module, path: str, prefer_ema: bool = False,
                          allow_mismatch: bool = True) -> DetectorLoadReport:
    """Load ``path`` into ``model``; keys whose shapes differ (a new class count when fine-tuning)
    are skipped and reported when ``allow_mismatch``, otherwise an error naming the key."""
    ckpt = read_checkpoint(path)
    usable, report = match_state(checkpoint_state(ckpt, prefer_ema), model, path, allow_mismatch)
    model.load_state_dict(usable, strict=False)
    meta = ckpt.get("meta") or {}
    if isinstance(meta.get("input_norm"), dict) and hasattr(model, "transform"):
        model.transform.input_norm = dict(meta["input_norm"])
    return report


def label_space(path: Optional[str]) -> Optional[Dict[str, list]]:
    """``{"category_ids": [...], "class_names": [...]}`` recorded in a checkpoint's meta, or None."""
    if not path:
        return None
    meta = read_checkpoint(path).get("meta") or {}
    if isinstance(meta.get("category_ids"), list):
        ids = [int(i) for i in meta["category_ids"]]
        names = meta.get("class_names") or [str(i) for i in ids]
        return {"category_ids": ids, "class_names": list(names)}
    return None
