"""Whole-detector weights: load a reskit detection checkpoint into a detector, read its label space,
and convert torchvision's detectors into reskit detection checkpoints.

A detection checkpoint knows what it predicts: its ``meta`` holds ``category_ids`` (label i+1 is
category ``category_ids[i]``), ``class_names`` and ``input_norm``. Evaluation and prediction use that
label space when it is there, so a converted torchvision checkpoint (91 COCO outputs) or a model
fine-tuned on another dataset maps its labels back to the right ids whatever the config says.
Reading, state selection, matching and the report are :mod:`engine.checkpoint`'s.

torchvision's ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn`` convert for
``configs/detection/faster_rcnn_R50_FPN_1x.yaml`` / ``configs/detection/mask_rcnn_R50_FPN_1x.yaml``:
our FPN detector is built from the same torchvision modules under the same attribute names; only the
bottom-up network moves (``backbone.body.*`` -> ``backbone.bottom_up.*``). The class space is kept as
torchvision trained it: 91 outputs where label i is COCO category id i (the ten unused ids included,
named "N/A"). Dropping those rows would change the softmax and so every score; keeping them gives
torchvision's detections exactly, and evaluation maps labels to ids through the recorded
``category_ids``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from backbones.norm import TORCHVISION_INPUT_NORM
from engine.checkpoint import (KIND_BACKBONE, KIND_CLASSIFICATION, KIND_DETECTION, LoadReport, check_fit,
                               checkpoint_kind, checkpoint_meta, checkpoint_state, match_state, read_checkpoint)
from engine.data import DataError

__all__ = ["load_detector_weights", "CLASS_LAYERS", "label_space", "is_torchvision_detection", "convert_torchvision_detection",
           "match_detections", "REMEDY"]

# What to do with a file that is not a reskit checkpoint, for every reader of detection weights.
REMEDY = "give a checkpoint of tools/train_det.py, or convert foreign weights with tools/transfer.py first"


# The class-dependent layers: a checkpoint for another number of classes leaves only these of
# another shape, the fine-tuning case (they start new, and the report lists them).
CLASS_LAYERS = ("roi_heads.box_predictor", "roi_heads.mask_predictor.mask_fcn_logits")
# What a Mask R-CNN has beyond a Faster R-CNN of the same config: a Faster R-CNN checkpoint
# initialises the rest (backbone, FPN, RPN, box head) and these start new, as the load report lists.
MASK_PARTS = ("roi_heads.mask_head", "roi_heads.mask_predictor")


def load_detector_weights(model: nn.Module, path: str, prefer_ema: bool = False, allow_mismatch: bool = True,
                          checkpoint: Optional[dict] = None, partial: Sequence[str] = ()) -> LoadReport:
    """Load ``path`` into ``model``. ``allow_mismatch`` (fine-tuning): the class-dependent predictor
    layers (:data:`CLASS_LAYERS`) may have another shape and start new; otherwise (evaluation,
    prediction) every tensor must fit. Anything else that does not fit stops with one line
    (:func:`engine.checkpoint.check_fit`) unless its name is in ``partial`` (``model.weights_partial``).
    ``checkpoint``: the file already read (:func:`engine.checkpoint.read_checkpoint`), not read again."""
    ckpt = read_checkpoint(path, REMEDY) if checkpoint is None else checkpoint
    kind = checkpoint_kind(ckpt)
    if kind in (KIND_CLASSIFICATION, KIND_BACKBONE) and not partial:
        raise DataError(f"{path}: a {kind} checkpoint, not a detector: give it as model.backbone.weights "
                        "(a classifier through tools/transfer.py first), not as model.weights / --weights")
    state = checkpoint_state(ckpt, prefer_ema, path)
    if allow_mismatch and any(k.startswith(MASK_PARTS) for k in model.state_dict()) \
            and not any(k.startswith(MASK_PARTS) for k in state):
        partial = (*partial, *MASK_PARTS)  # fine-tuning Mask R-CNN from a Faster R-CNN: the mask head starts new
    usable, report = match_state(state, model, path, allow_mismatch=True)
    check_fit(report, "model.weights", fine_tune=CLASS_LAYERS if allow_mismatch else (), partial=partial,
              remedy="check model.arch, model.mask, model.backbone and model.num_classes against the run that "
                     "wrote it", suggest_partial=allow_mismatch)
    model.load_state_dict(usable, strict=False)
    meta = checkpoint_meta(ckpt)
    if isinstance(meta.get("input_norm"), dict) and hasattr(model, "transform"):
        model.transform.input_norm = dict(meta["input_norm"])
        report.input_norm_from_weights = True
    report.input_norm = getattr(model, "input_norm", None)
    return report


def label_space(path: Optional[str], checkpoint: Optional[dict] = None) -> Optional[Dict[str, list]]:
    """``{"category_ids": [...], "class_names": [...]}`` recorded in a checkpoint's meta, or None.
    ``checkpoint``: the file already read, not read again."""
    if not path and checkpoint is None:
        return None
    meta = checkpoint_meta(read_checkpoint(path, REMEDY) if checkpoint is None else checkpoint)
    if isinstance(meta.get("category_ids"), list):
        ids = [int(i) for i in meta["category_ids"]]
        names = meta.get("class_names") or [str(i) for i in ids]
        return {"category_ids": ids, "class_names": list(names)}
    return None


# --------------------------------------------------------------------------------------------------
# torchvision detectors -> reskit detection checkpoints
# --------------------------------------------------------------------------------------------------


def _coco_names() -> list:
    from torchvision.models import _meta  # the category list torchvision's COCO weights carry
    return list(_meta._COCO_CATEGORIES)


def is_torchvision_detection(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.body.") for k in state) and \
        any(k.startswith("roi_heads.box_predictor.") for k in state)


def convert_torchvision_detection(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(reskit state dict, meta) of a torchvision Faster / Mask R-CNN R50-FPN state dict."""
    if not is_torchvision_detection(state):
        raise ValueError("not a torchvision Faster/Mask R-CNN state dict (expected backbone.body.* and "
                         "roi_heads.box_predictor.* keys)")
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.body."):
            key = "backbone.bottom_up." + key[len("backbone.body."):]
        out[key] = value
    num_outputs = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    names = _coco_names()
    if num_outputs == len(names):
        class_names = names[1:]
    else:
        class_names = [f"class {i}" for i in range(1, num_outputs)]
    mask = any(k.startswith("roi_heads.mask_predictor.") for k in state)
    meta = {"task": KIND_DETECTION, "arch": "FPN", "mask": mask, "num_classes": num_outputs - 1,
            "category_ids": list(range(1, num_outputs)), "class_names": class_names,
            "backbone": "resnet50", "input_norm": dict(TORCHVISION_INPUT_NORM),
            "source": "torchvision " + ("maskrcnn_resnet50_fpn" if mask else "fasterrcnn_resnet50_fpn")}
    return out, meta


def match_detections(expected: Dict[str, "np.ndarray"], got: Dict[str, "np.ndarray"],
                     box_tol: float = 1e-2, score_tol: float = 1e-4) -> int:
    """How many detections of ``expected`` have a partner in ``got``: same label, box within
    ``box_tol`` px (max coordinate difference) and score within ``score_tol``; pairs are one to one
    and order is ignored. For checking a conversion or a faster path against a reference.

    Each set: ``boxes`` N x 4, ``scores`` N, ``labels`` (or ``category_ids``) N.
    """
    import numpy as np

    def arrays(d):
        labels = d["labels"] if "labels" in d else d["category_ids"]
        return (np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4),
                np.asarray(d["scores"], dtype=np.float64).reshape(-1), np.asarray(labels).reshape(-1))

    eb, es, el = arrays(expected)
    gb, gs, gl = arrays(got)
    free = np.ones(len(gb), dtype=bool)
    matched = 0
    for i in np.argsort(-es, kind="stable"):
        ok = free & (gl == el[i]) & (np.abs(gb - eb[i]).max(axis=1) <= box_tol) & (np.abs(gs - es[i]) <= score_tol)
        if ok.any():
            free[np.flatnonzero(ok)[0]] = False
            matched += 1
    return matched
