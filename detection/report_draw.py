"""The pictures of the detection report: precision-recall curves, the error breakdown's stacked curves
(drawn as Detectron's analyze plots) and images with their errors (boxes, or masks where the results
have them); their legends as HTML swatches. The confusion matrix is engine.confusion's table."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from engine.report import THUMBNAIL_SIDE
from engine.svg_chart import TAB10, TAB20, Chart

from .error_analysis import ERROR_TYPES

# Colours of the gallery (RGB), also shown as the legend's swatches.
OUTCOME_COLORS = {"ground truth": (70, 130, 240), "true positive": (30, 190, 60),
                  "wrong class": (255, 150, 0), "false positive": (230, 30, 30), "missed": (220, 0, 220)}
# The analyze plots' colours (COCO API's makeplot): C75 and C50 white, then Loc, Sim, Oth, BG, FN.
_AREA_COLORS = ["#ffffff", "#ffffff", "#4f82bd", "#bf4f4c", "#5ce661", "#8063a3", "#ff9900"]
MAX_CURVES = 20  # classes drawn in one precision-recall panel
_UNIT = [0, 0.25, 0.5, 0.75, 1]


def class_colors(count: int) -> list:
    """Colours of ``count`` curves: matplotlib's default cycle, tab20 past its 10 colours."""
    return list(TAB20[:count] if count > 10 else TAB10[:count])


def pr_figure(panels: Sequence[tuple], recall: np.ndarray, iou_thrs: np.ndarray, order: Sequence[int],
              colors: Sequence[str]) -> Chart:
    """Precision over recall per class, solid at IoU 0.50 and dashed at 0.75, one panel per
    ``(precision, title)`` of ``panels``: COCOeval's ``precision`` [T, R, K, A, M] at area all, maxDets
    100; ``order``: the class indices drawn (at most MAX_CURVES), ``colors`` theirs. The legend is the
    page's (swatches_html)."""
    chart = Chart()
    t50, t75 = (int(np.argmin(np.abs(iou_thrs - thr))) for thr in (0.5, 0.75))
    for precision, title in panels:
        panel = chart.panel(title, "recall", "precision", (0, 1), (0, 1.02), _UNIT, _UNIT)
        for i, k in enumerate(order[:MAX_CURVES]):
            if np.all(precision[t50, :, k, 0, -1] < 0):  # no ground truth: no curve
                continue
            panel.line(recall, np.clip(precision[t50, :, k, 0, -1], 0, None), colors[i], width=1.5)
            panel.line(recall, np.clip(precision[t75, :, k, 0, -1], 0, None), colors[i], width=1.2, dash=True)
    return chart


def breakdown_figure(panels: Sequence[tuple], recall: np.ndarray) -> Chart:
    """Detectron's analyze plot: the seven cumulative PR curves as stacked areas, one panel per
    ``(ps, title)`` of ``panels``, ``ps`` [7, R] (a class, or the mean over classes), all object
    sizes. The legend is the page's (breakdown_legend); the AP under each curve is its table."""
    chart = Chart()
    for ps, title in panels:
        chart.panel(title, "recall", "precision", (0, 1), (0, 1), _UNIT, _UNIT).areas(recall, ps, _AREA_COLORS)
    return chart


def _css(color) -> str:
    """A CSS colour of a string (kept) or an RGB tuple of 0-255 ints."""
    return color if isinstance(color, str) else "rgb({},{},{})".format(*(int(v) for v in color))


def swatches_html(items: Sequence[tuple], after: str = "") -> str:
    """A legend line: ``(name, colour)`` items (a CSS string or an RGB tuple), then the text ``after``."""
    from engine.report import escape

    swatches = "".join(f'<span style="white-space:nowrap"><span class="swatch" style="background:{_css(c)}">'
                       f"</span>{escape(n)}</span>" for n, c in items)  # a swatch never apart from its name
    return f'<p class="note">{swatches}' + (f" &mdash; {escape(after)}" if after else "") + "</p>"


def breakdown_legend() -> str:
    return swatches_html(zip(ERROR_TYPES, _AREA_COLORS), "each band stacked on the one before it")


def _scaled(image: np.ndarray, max_side: int):
    import cv2

    scale = max_side / max(image.shape[:2])  # small images too: lines and labels stay readable
    if scale != 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image), scale
    return image.copy(), scale  # drawn on: never the caller's array


def _canvas_mask(segm, height: int, width: int, sx: float, sy: float) -> Optional[tuple]:
    """``(x0, y0, mask)``: one object's segmentation on the canvas (``mask`` uint8, its top-left
    corner at x0, y0), or None without a usable one. Polygons are filled at the canvas's scale; an RLE
    is decoded and only its box resized (a whole 12-megapixel mask resized for every object would
    cost more than the rest of the report)."""
    import cv2

    if isinstance(segm, list):
        polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) * (sx, sy) for p in segm
                 if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return None
        points = np.concatenate(polys)
        x0, y0 = np.floor(points.min(0)).astype(int)
        x1, y1 = np.ceil(points.max(0)).astype(int) + 1
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(p - (x0, y0)).astype(np.int32) for p in polys], 1)
        return int(x0), int(y0), mask
    if not (isinstance(segm, dict) and "counts" in segm):
        return None
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    if w <= 0 or h <= 0:
        return None
    crop = mask_utils.decode(rle)[y:y + h, x:x + w]
    x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
    size = (max(1, int(np.ceil((x + w) * sx)) - x0), max(1, int(np.ceil((y + h) * sy)) - y0))
    mask = (cv2.resize(crop * 255, size, interpolation=cv2.INTER_LINEAR) > 127).astype(np.uint8)
    return x0, y0, mask


def _fill(canvas: np.ndarray, region: tuple, color: tuple, alpha: float) -> None:
    x0, y0, mask = region
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + mask.shape[1], canvas.shape[1]), min(y0 + mask.shape[0], canvas.shape[0])
    if xb <= xa or yb <= ya:
        return
    import cv2

    view = canvas[ya:yb, xa:xb]
    overlay = view.copy()
    overlay[mask[ya - y0:yb - y0, xa - x0:xb - x0].astype(bool)] = color
    # blended over the whole box: where the overlay is the canvas the blend is the canvas (and cv2's
    # blend is several times faster than numpy's float arithmetic on the masked pixels)
    cv2.addWeighted(overlay, alpha, view, 1 - alpha, 0, dst=view)


def _outline(canvas: np.ndarray, region: tuple, color: tuple, width: int) -> None:
    import cv2

    x0, y0, mask = region
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    cv2.drawContours(canvas, contours, -1, color, width, cv2.LINE_AA)


def draw_errors(image: np.ndarray, entry: dict, names: Dict[int, str], max_side: int = THUMBNAIL_SIDE,
                masks: bool = False) -> np.ndarray:
    """A thumbnail of ``image`` with the ground truth (thin; missed objects thick) and the detections
    of one image of :func:`detection.error_analysis.match_detections`, coloured by outcome. With
    ``masks`` each object that has a segmentation is drawn as its mask (ground truth outlined,
    detections filled and outlined), the others as boxes; errors are labelled at their box."""
    import cv2

    canvas, _ = _scaled(image, max_side)
    sx, sy = canvas.shape[1] / image.shape[1], canvas.shape[0] / image.shape[0]
    thick = max(2, round(max(canvas.shape[:2]) / 300))
    font = 0.4 * max(1.0, max(canvas.shape[:2]) / 600)  # shown at about a third of the page's width
    labels = []

    def corner(b):
        x, y, w, h = b
        return (int(round(x * sx)), int(round(y * sy))), (int(round((x + w) * sx)), int(round((y + h) * sy)))

    def draw(obj, color, width, fill):
        region = _canvas_mask(obj.get("segmentation"), image.shape[0], image.shape[1], sx, sy) \
            if masks and obj.get("segmentation") else None
        if region is None:
            cv2.rectangle(canvas, *corner(obj["bbox"]), color, width, cv2.LINE_AA)
            return
        if fill:
            _fill(canvas, region, color, 0.35)
        _outline(canvas, region, color, width)

    for gt, outcome in entry["gt"]:
        if outcome == "fn":
            draw(gt, OUTCOME_COLORS["missed"], thick, False)
            labels.append((gt["bbox"], OUTCOME_COLORS["missed"], names.get(gt["category_id"], "?")))
        else:
            draw(gt, OUTCOME_COLORS["ground truth"], 1, False)
    kinds = {"tp": "true positive", "confused": "wrong class", "fp": "false positive"}
    for det, outcome, _ in sorted(entry["dt"], key=lambda d: d[0]["score"]):  # the best on top
        color = OUTCOME_COLORS[kinds[outcome]]
        draw(det, color, thick, True)
        if outcome != "tp":
            labels.append((det["bbox"], color, f"{names.get(det['category_id'], '?')} {det['score']:.2f}"))
    for b, color, label in labels:  # last: no mask drawn over a label
        p1 = corner(b)[0]
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        ty = max(th + base, p1[1])
        cv2.rectangle(canvas, (p1[0], ty - th - base), (p1[0] + tw, ty), color, -1)
        cv2.putText(canvas, label, (p1[0], ty - base), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def legend_html(masks: bool = False) -> str:
    how = ("ground truth outlined thin (missed: thick), detections filled" if masks else
           "ground truth thin, detections thick")
    return swatches_html(list(OUTCOME_COLORS.items()),
                         f"{how}; labelled: errors (class and score)")


def gallery_items(entries: List[tuple], images: Dict[int, dict], images_dir: str, names: Dict[int, str],
                  max_side: int = THUMBNAIL_SIDE, masks: bool = False) -> tuple:
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
        items.append((draw_errors(image, entry, names, max_side, masks), caption))
    return items, missing


def class_order(instances: Dict[int, int], cat_ids: Sequence[int]) -> List[int]:
    """Class indices, most instances first (the curves worth drawing when there are many)."""
    return sorted(range(len(cat_ids)), key=lambda k: -instances.get(cat_ids[k], 0))


def mean_breakdown(ps: np.ndarray, with_gt: Optional[np.ndarray] = None) -> np.ndarray:
    """[7, R, 4]: the mean over classes (those with ground truth when ``with_gt`` is given)."""
    sel = ps if with_gt is None else ps[:, :, with_gt]
    return sel.mean(axis=2) if sel.shape[2] else np.zeros(ps.shape[:2] + ps.shape[3:])
