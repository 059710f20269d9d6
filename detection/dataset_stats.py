"""What a COCO-format dataset holds, counted: the numbers and pictures of the dataset report.

Per class: instances, images, crowd regions and COCO's small / medium / large counts; over all
annotations: object sizes and box aspect ratios; which images to show as a sample; which images a
problem of :mod:`detection.dataset_check` names, and annotations drawn on a thumbnail. No torch here
(``tools/check_dataset.py`` starts without it).

Size ranges are COCO's: ``area`` (the annotation's, which COCOeval uses, the mask's area for
polygons) below 32^2 is small, from 32^2 to below 96^2 medium, from 96^2 large. COCOeval's ranges
are closed at both ends (an area of exactly 32^2 counts as small *and* medium there); a histogram
needs one bin per object, so here the lower bound is inclusive.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

__all__ = ["SMALL", "MEDIUM", "size_ranges", "annotation_statistics", "sample_images", "affected_images",
           "draw_annotations", "thumbnail"]

SMALL = 32 ** 2   # COCO: area < 32^2 is small
MEDIUM = 96 ** 2  # 32^2 <= area < 96^2 medium, else large


def size_ranges(areas: np.ndarray) -> Dict[str, int]:
    """``{"small": n, "medium": n, "large": n}`` of an array of areas (lower bounds inclusive)."""
    areas = np.asarray(areas, dtype=np.float64)
    return {"small": int((areas < SMALL).sum()), "medium": int(((areas >= SMALL) & (areas < MEDIUM)).sum()),
            "large": int((areas >= MEDIUM).sum())}


def annotation_statistics(data: dict) -> dict:
    """Counts of a (cleaned) COCO dict with ``images``, ``annotations``, ``categories``.

    Returns ``{"classes": [{"id", "name", "instances", "images", "crowd", "small", "medium",
    "large"}, ...] (in category-id order), "areas", "widths", "heights" (arrays over non-crowd
    annotations), "sizes" (small/medium/large over all of them), "per_image" (non-crowd annotations
    per image, an array over every image), "empty_images"}``.
    """
    categories = sorted(data["categories"], key=lambda c: c["id"])
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    crowd = Counter(a["category_id"] for a in data["annotations"] if a.get("iscrowd", 0))
    areas = np.array([float(a["area"]) for a in anns], dtype=np.float64)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    cat_of = np.array([a["category_id"] for a in anns], dtype=np.int64)
    images_of: Dict[int, set] = defaultdict(set)
    for a in anns:
        images_of[a["category_id"]].add(a["image_id"])
    classes = []
    for cat in categories:
        mine = cat_of == cat["id"]
        classes.append({"id": cat["id"], "name": str(cat.get("name", cat["id"])), "instances": int(mine.sum()),
                        "images": len(images_of[cat["id"]]), "crowd": crowd[cat["id"]], **size_ranges(areas[mine])})
    per_image = Counter(a["image_id"] for a in anns)
    counts = np.array([per_image.get(img["id"], 0) for img in data["images"]], dtype=np.int64)
    return {"classes": classes, "areas": areas, "widths": boxes[:, 2], "heights": boxes[:, 3],
            "sizes": size_ranges(areas), "per_image": counts, "empty_images": int((counts == 0).sum())}


def sample_images(data: dict, n: int) -> List[int]:
    """Ids of up to ``n`` images to show: first one image for each class, rarest class first (so a
    class with a single instance is seen), then images spread evenly over the rest, in id order."""
    by_id = sorted(img["id"] for img in data["images"])
    if n <= 0 or not by_id:
        return []
    images_of: Dict[int, List[int]] = defaultdict(list)
    for a in data["annotations"]:
        images_of[a["category_id"]].append(a["image_id"])
    chosen: List[int] = []
    for cat in sorted(images_of, key=lambda c: (len(images_of[c]), c)):
        if len(chosen) >= n:
            break
        if not any(i in chosen for i in images_of[cat]):
            chosen.append(min(images_of[cat]))
    taken = set(chosen)
    rest = [i for i in by_id if i not in taken]
    if rest and len(chosen) < n:
        picks = np.linspace(0, len(rest) - 1, min(n - len(chosen), len(rest))).round().astype(int)
        chosen += [rest[k] for k in sorted(set(picks.tolist()))]
    return sorted(chosen)


_IMAGE_ID = re.compile(r"image id (-?\d+)")
_ANN_ID = re.compile(r"annotation id (-?\d+)")
_BBOX = re.compile(r"bbox (\[[^\]]*\])")


def affected_images(code: str, examples: Sequence[str], data: dict) -> List[dict]:
    """The images a problem's examples name, as ``{"image_id", "annotation_id" (or None), "bbox" (the
    example's box, which may be a dropped annotation's, or None), "text"}``, one per example that
    names an image of ``data``. Read from the checker's example lines (``image id N``, ``annotation
    id N``, ``bbox [...]``); a duplicated file name names its image records by file name."""
    images = {img["id"]: img for img in data["images"]}
    by_name: Dict[str, List[int]] = defaultdict(list)
    for img in data["images"]:
        by_name[img["file_name"]].append(img["id"])
    out = []
    for text in examples:
        ids: List[int] = []
        m = _IMAGE_ID.search(text)
        if m:
            ids = [int(m.group(1))]
        elif code == "duplicate_file_name":
            ids = by_name.get(text.rsplit(": ", 1)[0], [])
        ann = _ANN_ID.search(text)
        box = _BBOX.search(text)
        bbox = None
        if box:
            try:
                bbox = [float(v) for v in json.loads(box.group(1))]
            except (ValueError, TypeError):
                bbox = None
        for image_id in ids:
            if image_id in images:
                out.append({"image_id": image_id, "annotation_id": int(ann.group(1)) if ann else None,
                            "bbox": bbox if bbox is not None and len(bbox) == 4 else None, "text": text})
    return out


def thumbnail(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` shrunk (never enlarged) so that its longer side is ``max_side``."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return np.ascontiguousarray(image)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def class_colours(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (golden-ratio hues), one per class index."""
    hues = (np.arange(max(n, 1)) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 179, np.full_like(hues, 210), np.full_like(hues, 255)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def _label(canvas: np.ndarray, text: str, x: int, y: int, colour) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1)
    y = max(th + base, y)
    cv2.rectangle(canvas, (x, y - th - base), (x + tw + 2, y), colour, -1)
    cv2.putText(canvas, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)


def draw_annotations(image: np.ndarray, annotations: Iterable[dict], names: Dict[int, str], max_side: int = 320,
                     highlight: Optional[set] = None, extra_boxes: Sequence[Sequence[float]] = (),
                     alpha: float = 0.3) -> np.ndarray:
    """A thumbnail of the RGB ``image`` (longer side ``max_side``) with the COCO ``annotations``
    drawn at its scale: polygons filled and outlined, boxes, class names; one colour per class.
    With ``highlight`` (annotation ids, the ones a problem names) the picture is about those: they
    get a thick red box and their name, the others only a thin outline; ``extra_boxes`` (COCO boxes,
    e.g. dropped annotations') are drawn in red too. Drawn after shrinking, so lines stay visible."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    canvas = thumbnail(image, max_side).copy()
    order = sorted(names)
    colours = class_colours(len(order))
    colour_of = {cid: tuple(int(v) for v in colours[k]) for k, cid in enumerate(order)}
    anns = list(annotations)
    focus = highlight is not None
    fill = canvas.copy()
    for a in anns if not focus else []:
        segm = a.get("segmentation")
        if isinstance(segm, list):
            for poly in segm:
                pts = (np.asarray(poly, dtype=np.float64).reshape(-1, 2) * scale).round().astype(np.int32)
                if len(pts) >= 3:
                    cv2.fillPoly(fill, [pts], colour_of.get(a["category_id"], (255, 255, 255)))
    canvas = cv2.addWeighted(fill, alpha, canvas, 1 - alpha, 0)
    named = []
    for a in anns:
        if focus and a["id"] in highlight:
            named.append(a)  # drawn last, over the others
            continue
        c = colour_of.get(a["category_id"], (255, 255, 255))
        segm = a.get("segmentation")
        if isinstance(segm, list) and not focus:
            for poly in segm:
                pts = (np.asarray(poly, dtype=np.float64).reshape(-1, 2) * scale).round().astype(np.int32)
                if len(pts) >= 2:
                    cv2.polylines(canvas, [pts], True, c, 1, cv2.LINE_AA)
        x, y, w, h = (v * scale for v in a["bbox"])
        cv2.rectangle(canvas, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), c, 1)
        if not focus:
            _label(canvas, names.get(a["category_id"], str(a["category_id"])), int(round(x)), int(round(y)), c)
    red = (255, 0, 0)
    for a in named:
        x, y, w, h = (v * scale for v in a["bbox"])
        cv2.rectangle(canvas, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), red, 3)
        _label(canvas, f"{names.get(a['category_id'], a['category_id'])} (id {a['id']})", int(round(x)),
               int(round(y)), (255, 160, 160))
    for box in extra_boxes:
        x, y, w, h = (v * scale for v in box)
        cv2.rectangle(canvas, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), red, 2)
    return canvas
