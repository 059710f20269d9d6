"""The semantic segmentation report: per-class IoU and accuracy, the confusion matrix over pixels, and
the images with the lowest per-image mIoU drawn as overlays (ground truth beside prediction).

:class:`WorstImages` is filled by :meth:`segmentation.task.SemanticSegmentationTask.evaluate` while it
evaluates (a per-image IoU from that image's own confusion matrix, and a bounded heap of small copies
of the worst images: no second pass over the data); :func:`add_semantic_report` adds the sections to
an :class:`engine.report.Report`.

Per-image mIoU: the mean IoU over the classes present in that image's ground truth or prediction
(ignored pixels left out), as the dataset mIoU is over the whole set (segmentation.metrics). An image
whose pixels are all ignored has none and is not ranked.
"""
from __future__ import annotations

import heapq
from typing import List, Optional, Sequence

import cv2
import numpy as np

from engine.confusion import add_confusion_matrix
from engine.report import Report

from .visualize import _outline_regions, voc_palette

__all__ = ["image_miou", "WorstImages", "add_semantic_report"]

_PALETTE = voc_palette()
THUMB_SIDE = 320  # longest side of the kept copies of an image, its label map and prediction


def image_miou(matrix) -> Optional[float]:
    """Mean IoU in percent over the classes present in the ground truth or the prediction of one
    image's confusion matrix (rows: ground truth); None when the matrix is empty."""
    m = np.asarray(matrix, dtype=np.float64)
    diag = np.diag(m)
    union = m.sum(0) + m.sum(1) - diag
    present = union > 0
    if not present.any():
        return None
    return float(100.0 * (diag[present] / union[present]).mean())


def _labels(array: np.ndarray) -> np.ndarray:
    """A label map as uint8 (the palette's look-up), or uint16 where a label exceeds 255."""
    return array.astype(np.uint8 if array.size == 0 or array.max() <= 255 else np.uint16)


def _small(array: np.ndarray, side: int, nearest: bool) -> np.ndarray:
    h, w = array.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return np.ascontiguousarray(array)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


class WorstImages:
    """The ``k`` images of lowest per-image mIoU seen so far (each kept as small uint8 copies), and
    every image's mIoU. Ties go to the image seen first; ``order`` numbers images as this rank saw them."""

    def __init__(self, k: int = 8):
        self.k = k
        self.scores: List[float] = []
        self._heap: list = []  # (-miou, -order, record): the root is the best of the worst k

    def add(self, matrix, image, target, prediction) -> Optional[float]:
        """One image: its confusion matrix (``[C, C]``), the image (uint8 ``[3, H, W]`` tensor or
        ``[H, W, 3]`` array), its label map and the prediction (``[H, W]``). Returns its mIoU."""
        miou = image_miou(matrix)
        if miou is None:
            return None
        order = len(self.scores)
        self.scores.append(miou)
        key = (-miou, -order)
        if self.k <= 0 or (len(self._heap) >= self.k and key <= self._heap[0][:2]):
            return miou
        record = {"miou": miou, "order": order, **self._copies(image, target, prediction, matrix)}
        item = (key[0], key[1], record)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)
        return miou

    @staticmethod
    def _copies(image, target, prediction, matrix) -> dict:
        def array(x):
            return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

        img = array(image)
        if img.ndim == 3 and img.shape[0] == 3 and img.shape[2] != 3:
            img = img.transpose(1, 2, 0)
        m = np.asarray(array(matrix), dtype=np.int64)
        return {"image": _small(np.ascontiguousarray(img.astype(np.uint8)), THUMB_SIDE, False),
                "target": _small(_labels(array(target)), THUMB_SIDE, True),
                "prediction": _small(_labels(array(prediction)), THUMB_SIDE, True),
                "pixel_accuracy": float(100.0 * np.trace(m) / m.sum()) if m.sum() else None}

    def state(self) -> dict:
        """What a rank sends to rank 0: the per-image scores and the worst records."""
        return {"scores": list(self.scores), "worst": [r for _, _, r in self._heap]}

    @staticmethod
    def merge(states: Sequence[dict], k: int) -> dict:
        """Join the ranks' states (in rank order): every score, and the ``k`` worst records overall,
        worst first (ties: the rank first, then the order within it)."""
        scores, worst = [], []
        for rank, s in enumerate(states):
            scores += s["scores"]
            worst += [dict(r, rank=rank) for r in s["worst"]]
        worst.sort(key=lambda r: (r["miou"], r["rank"], r["order"]))
        return {"scores": scores, "worst": worst[:k]}


def _header(width: int, text: str) -> np.ndarray:
    strip = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (29, 35, 48), 1, cv2.LINE_AA)
    return strip


def _overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, ignore_index: int,
             names: Sequence[str], alpha: float = 0.55) -> np.ndarray:
    """segmentation.visualize.overlay's picture through a colour look-up and cv2.addWeighted (a few
    times faster on the report's budget: labels are uint8, so ``palette[labels]`` is one table read)."""
    if labels.dtype == np.uint8:
        colours = cv2.LUT(cv2.merge([labels, labels, labels]), palette.reshape(256, 1, 3))
    else:  # more than 255 labels: the palette repeats (its 256 colours), the map itself is exact
        colours = palette[labels % len(palette)]
    blended = cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)
    keep = ((labels == 0) | (labels == ignore_index)).astype(np.uint8)
    out = blended.copy()
    cv2.copyTo(image, keep, out)  # background and ignored pixels keep the image
    return _outline_regions(out, labels, names, palette, ignore_index, 0)


def _panel(record: dict, names: Sequence[str], ignore_index: int) -> np.ndarray:
    """Ground truth, prediction and errors stacked, each over the image (small images enlarged to
    :data:`THUMB_SIDE` for reading: nearest for the label maps)."""
    image, target, prediction = record["image"], record["target"], record["prediction"]
    scale = THUMB_SIDE / max(image.shape[:2])
    if scale > 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        target = cv2.resize(target, size, interpolation=cv2.INTER_NEAREST)
        prediction = cv2.resize(prediction, size, interpolation=cv2.INTER_NEAREST)
    palette = _PALETTE
    gt = _overlay(image, target, palette, ignore_index, names)
    pred = _overlay(image, prediction, palette, ignore_index, names)
    errors = cv2.addWeighted(image, 0.35, np.full_like(image, 128), 0.65, 0)  # faded
    wrong = (target != prediction) & (target != ignore_index)
    errors[wrong] = (214, 39, 40)
    errors[target == ignore_index] = (150, 150, 150)
    w = image.shape[1]
    return np.concatenate([_header(w, "ground truth"), gt, _header(w, "prediction"), pred,
                           _header(w, "wrong pixels (red; ignored: grey)"), errors], axis=0)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def add_semantic_report(report: Report, results: dict, matrix, names: Sequence[str], worst: Optional[dict] = None,
                        ignore_index: int = 255) -> None:
    """The task's sections: summary numbers, the per-class table, the confusion matrix over pixels, the
    per-image mIoU spread and the worst images. ``results``: segmentation.metrics.segmentation_metrics's
    dict; ``matrix``: its confusion matrix; ``worst``: :meth:`WorstImages.merge`'s."""
    m = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix, dtype=np.int64)
    report.section("Semantic segmentation")
    report.table(["mIoU", "pixel accuracy", "mean class accuracy", "pixels evaluated", "images"],
                 [[results.get("mIoU"), results.get("pixel_accuracy"), results.get("mean_accuracy"), int(m.sum()),
                   len(worst["scores"]) if worst else None]], sortable=False,
                 caption="In percent over every pixel of the validation set that is not ignored.")
    gt, pred = m.sum(1), m.sum(0)
    rows = []
    for c, name in enumerate(names):
        rows.append([name, results["per_class_IoU"].get(name), results["per_class_accuracy"].get(name),
                     int(gt[c]), 100.0 * gt[c] / max(1, m.sum()), int(pred[c])])
    report.heading("per class")
    report.table(["class", "IoU", "accuracy", "pixels (truth)", "% of pixels", "pixels (predicted)"], rows,
                 caption="IoU = right / (truth + predicted - right); accuracy = right / truth; n/a: the class is "
                         "neither in the truth nor predicted (left out of the mean). Click a column to sort.")

    report.section("Confusion matrix")
    add_confusion_matrix(report, m, list(names), unit="pixels")

    report.section("Worst images")
    if not worst or not worst["worst"]:
        report.text("No image was ranked (every pixel ignored?).", "note")
        return
    scores = np.asarray(worst["scores"])
    q = np.percentile(scores, [0, 25, 50, 75, 100])
    report.text(f"Per-image mIoU over {len(scores)} images (the mean over the classes each image's truth or "
                f"prediction holds): min {q[0]:.1f}, quartiles {q[1]:.1f} / {q[2]:.1f} / {q[3]:.1f}, max {q[4]:.1f}. "
                f"The {len(worst['worst'])} lowest below, worst first.", "note")
    items = []
    for r in worst["worst"]:
        caption = f"mIoU {r['miou']:.1f}, pixel accuracy {_fmt(r.get('pixel_accuracy'))}"
        items.append((_panel(r, names, ignore_index), caption))
    report.gallery(items, max_side=3 * THUMB_SIDE + 60)
