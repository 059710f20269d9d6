"""torchvision detection checkpoints (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``) as
reskit detection checkpoints for ``configs/detection/faster_rcnn_R50_FPN_1x.yaml`` /
``configs/detection/mask_rcnn_R50_FPN_1x.yaml``.

Our FPN detector is built from the same torchvision modules under the same attribute names; only the
bottom-up network moves (``backbone.body.*`` -> ``backbone.bottom_up.*``). The class space is kept as
torchvision trained it: 91 outputs where label i is COCO category id i (the ten unused ids included,
named "N/A"). Dropping those rows would change the softmax and so every score; keeping them gives
torchvision's detections exactly, and evaluation maps labels to ids through the recorded
``category_ids``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch

from backbones.norm import TORCHVISION_INPUT_NORM


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
    meta = {"task": "detection", "arch": "FPN", "mask": mask, "num_classes": num_outputs - 1,
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
