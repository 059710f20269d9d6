"""Semantic segmentation metrics from a confusion matrix summed over every pixel of every rank.

``matrix[t, p]`` counts the pixels of ground-truth class ``t`` predicted as ``p``; pixels labelled
``ignore_index`` are left out. From it, in percent (as torchvision's references/segmentation
``ConfusionMatrix``):

- pixel accuracy = trace / total;
- class accuracy_c = matrix[c, c] / (pixels of class c);
- IoU_c = matrix[c, c] / (pixels of class c + pixels predicted c - matrix[c, c]).

A class absent from the ground truth *and* never predicted has no IoU (0 / 0): it is reported as
None and left out of the mean (torchvision's ``iu.mean()`` would turn the mean into NaN). A class
predicted but absent from the ground truth has IoU 0 and counts. Likewise a class without ground
truth has no accuracy and is left out of ``mean_accuracy``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch

from engine.dist import reduce_sum_tensor

__all__ = ["ConfusionMatrix", "segmentation_metrics", "format_table"]


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255, device: Optional[torch.device] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """Add label maps ``target`` and ``prediction`` (same shape, integer class indices); returns
        their own ``[C, C]`` counts (the report ranks images by them)."""
        if target.shape != prediction.shape:
            raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ in shape")
        n = self.num_classes
        valid = target != self.ignore_index
        t = target[valid].to(device=self.matrix.device, dtype=torch.int64)
        p = prediction[valid].to(device=self.matrix.device, dtype=torch.int64)
        if t.numel() and (t.min() < 0 or t.max() >= n):
            raise ValueError(f"ground-truth labels {sorted(set(t[(t < 0) | (t >= n)].unique().tolist()))[:8]} "
                             f"are outside 0..{n - 1} and not ignore_index {self.ignore_index}")
        if p.numel() and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"predicted labels outside 0..{n - 1}")
        counts = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
        self.matrix += counts
        return counts

    def reduce(self) -> "ConfusionMatrix":
        """Sum the matrices of all ranks (a collective: every rank must call it)."""
        self.matrix = reduce_sum_tensor(self.matrix)
        return self

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        return segmentation_metrics(self.matrix, class_names)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> list:
    """100 * num / den per entry, None where den == 0."""
    return [100.0 * float(a) / float(b) if b > 0 else None for a, b in zip(num.tolist(), den.tolist())]


def _mean(values: list) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def segmentation_metrics(matrix: torch.Tensor, class_names: Optional[Sequence[str]] = None) -> dict:
    """``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_IoU": {name: IoU or None},
    "per_class_accuracy": {...}}`` in percent from a confusion matrix (rows: ground truth)."""
    m = matrix.detach().to("cpu", torch.float64)
    n = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    diag, gt, pred = m.diagonal(), m.sum(1), m.sum(0)
    iou = _ratio(diag, gt + pred - diag)
    acc = _ratio(diag, gt)
    total = float(m.sum())
    pixel_accuracy = 100.0 * float(diag.sum()) / total if total > 0 else None
    return {
        "mIoU": _mean(iou),
        "pixel_accuracy": pixel_accuracy,
        "mean_accuracy": _mean(acc),
        "per_class_IoU": dict(zip(names, iou)),
        "per_class_accuracy": dict(zip(names, acc)),
    }


def format_table(results: Dict[str, object]) -> str:
    """A printable table of :func:`segmentation_metrics` results."""
    def show(v):
        return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.1f}"

    lines = [f"mIoU {show(results['mIoU'])}   pixel accuracy {show(results['pixel_accuracy'])}   "
             f"mean accuracy {show(results['mean_accuracy'])}", f"{'class':<20} {'IoU':>5} {'acc':>5}"]
    for name, value in results["per_class_IoU"].items():
        lines.append(f"{name[:20]:<20} {show(value)} {show(results['per_class_accuracy'].get(name))}")
    return "\n".join(lines)
