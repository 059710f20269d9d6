"""The classification report: per-class accuracy, the confusion matrix, the most confident mistakes.

:class:`ClassificationRecords` is filled by :meth:`classification.task.ClassificationTask.evaluate`
as it evaluates: per image the true class, the predicted class (the top-1) and its probability, and
small copies of the ``k`` mistakes of highest probability (a bounded heap: no second pass over the
data). :func:`add_classification_report` adds the sections to an :class:`engine.report.Report`.
"""
from __future__ import annotations

import heapq
from typing import List, Sequence

import cv2
import numpy as np

from engine.confusion import add_confusion_matrix, confusion_matrix, per_class_accuracy
from engine.report import Report

__all__ = ["ClassificationRecords", "view_image", "add_classification_report"]

THUMB_SIDE = 224  # longest side of a kept mistake


def view_image(sample) -> np.ndarray:
    """The picture of one evaluated sample as RGB uint8 ``[H, W, 3]``: a ``[3, H, W]`` crop in 0..1;
    of a 10-crop ``[10, 3, H, W]`` the centre crop (torchvision's order: 4 corners, centre, flips);
    of multi-scale views (a list) the first."""
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    if sample.dim() == 4:
        sample = sample[4] if sample.shape[0] == 10 else sample[0]
    image = (sample.detach().float().clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
    h, w = image.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class ClassificationRecords:
    """Labels, predictions and their probabilities of one rank's images, and the ``k`` most confident
    mistakes among them (ties: the image seen first)."""

    def __init__(self, k: int = 16):
        self.k = k
        self.labels: List[int] = []
        self.predictions: List[int] = []
        self.confidences: List[float] = []
        self._heap: list = []  # (confidence, -order, record): the root is the least confident kept

    def add(self, probabilities, labels, samples) -> None:
        """A batch: ``probabilities`` ``[N, C]`` (softmax scores), ``labels`` ``[N]``, ``samples`` the
        batch's images (indexable per image; see :func:`view_image`), read only for a kept mistake."""
        confidence, predicted = probabilities.float().max(dim=1)
        for i, (c, p, t) in enumerate(zip(confidence.tolist(), predicted.tolist(), labels.tolist())):
            order = len(self.labels)
            self.labels.append(int(t))
            self.predictions.append(int(p))
            self.confidences.append(float(c))
            if p == t or self.k <= 0:
                continue
            key = (c, -order)
            if len(self._heap) >= self.k and key <= self._heap[0][:2]:
                continue
            record = {"label": int(t), "prediction": int(p), "confidence": float(c),
                      "true_probability": float(probabilities[i, t]), "order": order, "image": view_image(samples[i])}
            item = (key[0], key[1], record)
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, item)
            else:
                heapq.heapreplace(self._heap, item)

    def state(self) -> dict:
        return {"labels": self.labels, "predictions": self.predictions, "confidences": self.confidences,
                "mistakes": [r for _, _, r in self._heap]}

    @staticmethod
    def merge(states: Sequence[dict], k: int) -> dict:
        """Join the ranks' states (in rank order); the ``k`` most confident mistakes overall, most
        confident first (ties: the rank first, then the order within it)."""
        out = {"labels": [], "predictions": [], "confidences": [], "mistakes": []}
        for rank, s in enumerate(states):
            for key in ("labels", "predictions", "confidences"):
                out[key] += list(s[key])
            out["mistakes"] += [dict(r, rank=rank) for r in s["mistakes"]]
        out["mistakes"].sort(key=lambda r: (-r["confidence"], r["rank"], r["order"]))
        out["mistakes"] = out["mistakes"][:k]
        return out


def _enlarged(image: np.ndarray, side: int = 192) -> np.ndarray:
    """Small crops (64 px shapes, 32 px CIFAR) enlarged to ``side`` for reading; larger ones as they are."""
    scale = side / max(image.shape[:2])
    if scale <= 1:
        return image
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_NEAREST)


def add_classification_report(report: Report, results: dict, records: dict, names: Sequence[str]) -> None:
    """The task's sections from ``results`` (top-1 / top-5) and :meth:`ClassificationRecords.merge`'s dict."""
    n = len(names)
    labels = np.asarray(records["labels"], dtype=np.int64)
    predictions = np.asarray(records["predictions"], dtype=np.int64)
    confidences = np.asarray(records["confidences"], dtype=np.float64)
    matrix = confusion_matrix(labels, predictions, n)
    report.section("Classification")
    view = {"center": "centre crop", "ten_crop": "10-crop", "multiscale": "multi-scale"}.get(results.get("view"), "")
    report.table(["top-1", "top-5", "images", "mistakes", "view"],
                 [[results.get("top1"), results.get("top5"), len(labels), int((labels != predictions).sum()),
                   view]], sortable=False,
                 caption="In percent on the validation set" + (f"; {results['skipped']} unreadable images skipped"
                                                              if results.get("skipped") else "") + ".")
    accuracy = per_class_accuracy(matrix)
    rows = []
    for c, name in enumerate(names):
        mine = labels == c
        wrong = mine & (predictions != c)
        rows.append([name, accuracy[c], int(mine.sum()), int(matrix[:, c].sum()),
                     float(confidences[mine].mean() * 100) if mine.any() else None,
                     float(confidences[wrong].mean() * 100) if wrong.any() else None])
    report.heading("per class")
    report.table(["class", "accuracy", "images", "predicted as this", "mean confidence", "mean confidence when wrong"],
                 rows, caption="Accuracy: the share of the class's images whose top-1 is the class; confidence: "
                               "the top-1's softmax probability, in percent. Click a column to sort.")
    report.section("Confusion matrix")
    add_confusion_matrix(report, matrix, list(names), unit="images")
    report.section("Most confident mistakes")
    mistakes = records["mistakes"]
    if not mistakes:
        report.text("No mistake: every image's top-1 is its class.", "note")
        return
    report.text(f"The {len(mistakes)} wrong top-1 predictions of highest probability, most confident first: "
                "often a wrong label, an ambiguous image, or a class the network has learnt a shortcut for.", "note")
    report.gallery([(_enlarged(r["image"]), f"true {names[r['label']]} ({100 * r['true_probability']:.0f}%), predicted "
                                 f"{names[r['prediction']]} ({100 * r['confidence']:.0f}%)") for r in mistakes])
