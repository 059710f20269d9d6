"""The pictures of the detection report: precision-recall curves, the confusion matrix, the error
breakdown's stacked curves (drawn as Detectron's analyze plots) and images with their errors."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from engine.report import figure

from .error_analysis import ERROR_TYPES

# Colours of the gallery (RGB), also shown as the legend's swatches.
OUTCOME_COLORS = {"ground truth": (70, 130, 240), "true positive": (30, 190, 60),
                  "wrong class": (255, 150, 0), "false positive": (230, 30, 30), "missed": (220, 0, 220)}
# The analyze plots' colours (COCO API's makeplot): C75 and C50 white, then Loc, Sim, Oth, BG, FN.
_AREA_COLORS = [(1, 1, 1), (1, 1, 1), (.31, .51, .74), (.75, .31, .30), (.36, .90, .38), (.50, .39, .64), (1, .6, 0)]
MAX_CURVES = 20  # classes drawn in one precision-recall panel


def pr_figure(panels: Sequence[tuple], recall: np.ndarray, iou_thrs: np.ndarray, names: Sequence[str],
              order: Sequence[int]):
    """Precision over recall per class, solid at IoU 0.50 and dashed at 0.75, one panel per
    ``(precision, title)`` of ``panels``: COCOeval's ``precision`` [T, R, K, A, M] at area all, maxDets
    100; ``order``: the class indices drawn, at most MAX_CURVES. One legend, in the last panel (the
    per-class table has the numbers): drawing text is most of a figure's time."""
    n = len(panels)
    fig, axes = figure(6.2 * n + (1.6 if len(order) > 10 else 0.8), 4.4, ncols=n, squeeze=False)
    shown = list(order[:MAX_CURVES])
    if len(shown) > 10:  # the default cycle repeats after 10 colours
        from matplotlib import colormaps
        colors = [colormaps["tab20"](i) for i in range(20)]
    else:
        colors = [f"C{i}" for i in range(10)]
    t50, t75 = (int(np.argmin(np.abs(iou_thrs - thr))) for thr in (0.5, 0.75))
    for ax, (precision, title) in zip(axes[0], panels):
        for i, k in enumerate(shown):
            if np.all(precision[t50, :, k, 0, -1] < 0):  # no ground truth: no curve
                continue
            ax.plot(recall, np.clip(precision[t50, :, k, 0, -1], 0, None), color=colors[i], linewidth=1.2,
                    label=names[k])
            ax.plot(recall, np.clip(precision[t75, :, k, 0, -1], 0, None), color=colors[i], linewidth=1.0,
                    linestyle="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlabel("recall")
        ax.set_title(f"{title}: IoU 0.50 solid, 0.75 dashed", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("precision")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           ncol=2 if len(shown) > 10 else 1, frameon=False)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.75 / width, right=1 - (1.6 if len(order) > 10 else 0.8) / width - 0.1 / n,
                        bottom=0.12, top=0.92, wspace=0.12)  # tight_layout: slow
    return fig


def confusion_figure(cm: np.ndarray, names: Sequence[str], title: str):
    """The matrix as a heat map (rows normalised for the colour, counts written in the cells)."""
    k = len(names) + 1
    labels = list(names) + ["background"]
    longest = max(len(n) for n in labels)
    margin = 0.8 + 0.065 * longest  # inches the rotated tick labels and the axis label take
    cell = min(0.5, max(0.2, 9.0 / k))
    width, height = margin + k * cell + 0.3, margin + k * cell + 0.4
    fig, ax = figure(width, height)
    fig.subplots_adjust(left=margin / width, right=1 - 0.3 / width, bottom=margin / height, top=1 - 0.4 / height)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("detected as")
    ax.set_ylabel("ground truth")
    if k <= 40:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black")
    ax.set_title(title, fontsize=10)
    return fig


def breakdown_figure(rows: Sequence[tuple], recall: np.ndarray):
    """Detectron's analyze plot: the seven cumulative PR curves as stacked areas, one panel per
    ``(ps, title)`` of ``rows``, ``ps`` [7, R] (a class, or the mean over classes), all object
    sizes. AP of each kind in the legend."""
    fig, axes = figure(4.6 * len(rows), 4.0, ncols=len(rows), squeeze=False)
    for (ps, title), ax in zip(rows, axes[0]):
        aps = ps.mean(axis=1)
        layers = np.vstack([ps[:1], np.diff(ps, axis=0)])
        labels = [f"[{v:.3f}] {name}" for v, name in zip(aps, ERROR_TYPES)]
        ax.stackplot(recall, layers, labels=labels, colors=_AREA_COLORS, edgecolor="k", linewidth=0.3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])  # fewer ticks and labels: drawing text is the slow part
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlabel("recall")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("precision")
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.12, top=0.92, wspace=0.15)
    return fig


def _scaled(image: np.ndarray, max_side: int):
    import cv2

    scale = max_side / max(image.shape[:2])  # small images too: lines and labels stay readable
    if scale != 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), scale


def draw_errors(image: np.ndarray, entry: dict, names: Dict[int, str], max_side: int = 800) -> np.ndarray:
    """A thumbnail of ``image`` with the ground truth (thin; missed objects thick) and the detections
    of one image of :func:`detection.error_analysis.match_detections`, coloured by outcome."""
    import cv2

    canvas, scale = _scaled(image, max_side)
    thick = max(2, round(max(canvas.shape[:2]) / 300))
    font = 0.4 * max(1.0, max(canvas.shape[:2]) / 600)  # shown at about a third of the page's width

    def box(b, color, width, label=None):
        x, y, w, h = (v * scale for v in b)
        p1, p2 = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
        cv2.rectangle(canvas, p1, p2, color, width, cv2.LINE_AA)
        if label:
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
            ty = max(th + base, p1[1])
            cv2.rectangle(canvas, (p1[0], ty - th - base), (p1[0] + tw, ty), color, -1)
            cv2.putText(canvas, label, (p1[0], ty - base), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)

    for gt, outcome in entry["gt"]:
        if outcome == "fn":
            box(gt["bbox"], OUTCOME_COLORS["missed"], thick, names.get(gt["category_id"], "?"))
        else:
            box(gt["bbox"], OUTCOME_COLORS["ground truth"], 1)
    kinds = {"tp": "true positive", "confused": "wrong class", "fp": "false positive"}
    for det, outcome, _ in sorted(entry["dt"], key=lambda d: d[0]["score"]):  # the best on top
        label = f"{names.get(det['category_id'], '?')} {det['score']:.2f}"
        box(det["bbox"], OUTCOME_COLORS[kinds[outcome]], thick, None if outcome == "tp" else label)
    return canvas


def legend_html() -> str:
    from engine.report import escape

    return '<p class="note">' + "".join(
        f'<span class="swatch" style="background:rgb{c}"></span>{escape(n)}' for n, c in OUTCOME_COLORS.items()) + \
        " &mdash; ground truth thin, detections thick; labelled: errors (class and score)</p>"


def gallery_items(entries: List[tuple], images: Dict[int, dict], images_dir: str, names: Dict[int, str],
                  max_side: int = 800) -> tuple:
    """(items for Report.gallery, files not found) of the (image_id, entry, errors) ``entries``."""
    from engine.data import DataError
    from engine.image_io import read_image

    items, missing = [], []
    for image_id, entry, errors in entries:
        info = images[image_id]
        path = os.path.join(images_dir, info["file_name"])
        try:
            image = read_image(path)
        except (DataError, OSError):
            missing.append(info["file_name"])
            continue
        counts = {k: sum(o == k for _, o, _ in entry["dt"]) for k in ("fp", "confused")}
        fn = sum(o == "fn" for _, o in entry["gt"])
        caption = (f"{info['file_name']}: {errors} error{'s' * (errors != 1)} ({counts['fp']} false "
                   f"positive{'s' * (counts['fp'] != 1)}, {counts['confused']} wrong class, {fn} missed)")
        items.append((draw_errors(image, entry, names, max_side), caption))
    return items, missing


def class_order(instances: Dict[int, int], cat_ids: Sequence[int]) -> List[int]:
    """Class indices, most instances first (the curves worth drawing when there are many)."""
    return sorted(range(len(cat_ids)), key=lambda k: -instances.get(cat_ids[k], 0))


def mean_breakdown(ps: np.ndarray, with_gt: Optional[np.ndarray] = None) -> np.ndarray:
    """[7, R, 4]: the mean over classes (those with ground truth when ``with_gt`` is given)."""
    sel = ps if with_gt is None else ps[:, :, with_gt]
    return sel.mean(axis=2) if sel.shape[2] else np.zeros(ps.shape[:2] + ps.shape[3:])
