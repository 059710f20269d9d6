"""COCO annotations validated once: what training, evaluation and ``tools/check_dataset.py`` all use.

:func:`clean_coco` takes a COCO json (a dict) and returns the records that can be used, with every
record left out counted by reason (and a few examples). The same function serves
:func:`detection.coco.load_coco` (training and validation sets, segmentation's COCO label maps),
:mod:`detection.evaluation` (the ground truth of every COCO evaluation) and
:mod:`detection.dataset_check` (which names every record), so the three never disagree about what a
dataset holds. See docs/ARCHITECTURE.md (COCO primitives).

Dropped (left out of training and evaluation), by reason: :data:`DROPPED`. Repaired and kept:
:data:`REPAIRED` (polygons pycocotools cannot rasterise removed from a segmentation; an RLE whose
size or run lengths are wrong removed, the box kept; a missing area taken from the box). Counted
only: :data:`NOTED` (boxes clipped to the image in training, annotations without a segmentation).

pycocotools and faster-coco-eval validate none of this: a ``null`` box crashes faster-coco-eval and
scores as a bogus APs in pycocotools, a polygon of two points crashes ``frPyObjects``, a corrupt RLE
decodes to uninitialised memory. Hence the checks here, by hand.

Where the parts live: the reasons and :class:`CleanedCoco` in :mod:`detection.cleaned_coco`, the
number tests in :mod:`detection.json_numbers`, polygons and RLEs in :mod:`detection.annotation_segm`;
the records themselves (images, categories, annotations, boxes) here. Every name stays importable from
here.

No torch here (``tools/check_dataset.py`` and ``tools/eval_coco.py`` start without it).
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

from engine.data import DataError

from .annotation_segm import _check_polygons, _clean_segmentation, _well_formed, rle_is_valid
from .cleaned_coco import DEFAULT_MAX_DROPPED_FRACTION, DROPPED, NOTED, REPAIRED, CleanedCoco, _Where
from .json_numbers import _box_numbers, _is_int, _is_number

__all__ = ["DROPPED", "REPAIRED", "NOTED", "CleanedCoco", "clean_coco", "rle_is_valid",
           "DEFAULT_MAX_DROPPED_FRACTION"]


def _drop_reason(ann: dict, img: Optional[dict], categories: dict, seen: set, dropped_image_ids: set,
                 where: _Where, i: int, report: CleanedCoco) -> Optional[str]:
    """The reason (counted, with an example) an annotation record is dropped, or None to keep it."""
    if ann["id"] in seen:
        report.add("duplicate_annotation_id", f"annotation id {ann['id']} (annotations[{i}])")
        return "duplicate_annotation_id"
    seen.add(ann["id"])
    if img is None:
        dropped_record = isinstance(ann["image_id"], (int, str)) and ann["image_id"] in dropped_image_ids
        note = " (its image record was dropped)" if dropped_record else ""
        report.add("unknown_image_id", where + note)
        return "unknown_image_id"
    if not _is_int(ann["category_id"]) or ann["category_id"] not in categories:
        report.add("unknown_category_id", f"{where}: category_id {ann['category_id']!r}")
        return "unknown_category_id"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), bool):
        report.add("bad_iscrowd", f"{where}: iscrowd {ann.get('iscrowd')!r}")
        return "bad_iscrowd"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and _box_numbers(bbox)):
        report.add("malformed_bbox", f"{where}: bbox {bbox!r}")
        return "malformed_bbox"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        report.add("empty_bbox", f"{where}: bbox {bbox}")
        return "empty_bbox"
    W, H = img["width"], img["height"]
    if min(x + w, W) <= max(x, 0) or min(y + h, H) <= max(y, 0):
        report.add("bbox_outside_image", f"{where}: bbox {bbox}, image {W}x{H} (w x h)")
        return "bbox_outside_image"
    return None


def clean_coco(data, source: str = "annotations", max_examples: int = 5) -> CleanedCoco:
    """Validate a COCO json dict; see the module docstring. DataError (one line) only when the json
    is not an object with ``images`` and ``categories`` lists."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: the top level must be an object with images, annotations, categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: key '{key}' missing or not a list; run tools/check_dataset.py on it")
    report = CleanedCoco(source, max_examples)
    report.missing_annotations = "annotations" not in data
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{source}: 'annotations' is a {type(annotations).__name__}, expected a list")

    images: Dict[int, dict] = {}
    dropped_image_ids = set()
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str)
                and _is_int(img.get("width")) and _is_int(img.get("height"))
                and img["width"] > 0 and img["height"] > 0):
            report.add("bad_image_record", f"images[{i}]: {str(img)[:120]}")
            if isinstance(img, dict) and isinstance(img.get("id"), (str, int)):
                dropped_image_ids.add(img["id"])
            continue
        if img["id"] in images:
            report.add("duplicate_image_id", f"image id {img['id']} (images[{i}], {img['file_name']})")
            continue
        images[img["id"]] = img

    categories: Dict[int, dict] = {}
    for i, cat in enumerate(data["categories"]):
        if not (isinstance(cat, dict) and _is_int(cat.get("id"))):
            report.add("bad_category_record", f"categories[{i}]: {str(cat)[:120]}")
            continue
        if cat["id"] in categories:
            report.add("duplicate_category_id", f"category id {cat['id']} (categories[{i}], {cat.get('name')})")
            continue
        categories[cat["id"]] = cat

    kept: List[dict] = []
    seen = set()
    in_file: Counter = Counter()  # image id: annotations of the file pointing at it
    dropped_of: Dict[int, Counter] = {}  # image id: {reason: n} of its dropped annotations
    pending: List[int] = []  # positions in kept of annotations whose polygons _check_polygons checks
    pending_size: List[tuple] = []  # (width, height, polygons) of each
    for i, ann in enumerate(annotations):
        if not (isinstance(ann, dict) and _is_int(ann.get("id")) and "image_id" in ann and "category_id" in ann):
            report.add("bad_annotation_record", f"annotations[{i}]: {str(ann)[:120]}")
            continue
        where = _Where(ann)
        image_id = ann["image_id"]
        img = images.get(image_id) if type(image_id) is int or _is_int(image_id) else None
        if img is not None:
            in_file[img["id"]] += 1
        reason = _drop_reason(ann, img, categories, seen, dropped_image_ids, where, i, report)
        if reason is not None:
            if img is not None:
                dropped_of.setdefault(img["id"], Counter())[reason] += 1
            continue
        x, y, w, h = ann["bbox"]
        W, H = img["width"], img["height"]
        if x < 0 or y < 0 or x + w > W or y + h > H:
            report.add("bbox_clipped", f"{where}: bbox {ann['bbox']}, image {W}x{H} (w x h)")
        fixes = {}
        if "segmentation" in ann:
            segm = ann["segmentation"]
            if type(segm) is list and segm and (_well_formed(segm[0]) if len(segm) == 1 else all(map(_well_formed, segm))):
                pending.append(len(kept))  # well-formed polygons: their numbers and bounds are checked below, at once
                pending_size.append((W, H, len(segm)))
            else:
                segm, changed = _clean_segmentation(segm, img, where, report)
                if changed:
                    fixes["segmentation"] = segm
        if not _is_number(ann.get("area")):
            report.add("missing_area", f"{where}: area {ann.get('area')!r}")
            fixes["area"] = float(w * h)
        kept.append(dict(ann, **fixes) if fixes else ann)

    _check_polygons(kept, pending, pending_size, images, report)
    for image_id, n in in_file.items():
        reasons = dropped_of.get(image_id)
        if reasons is not None and sum(reasons.values()) == n:  # every annotation it had was dropped
            img = images.pop(image_id)
            report.left_out_images.append(image_id)
            why = ", ".join(f"{k} {r}" for r, k in reasons.items())
            report.add("no_usable_annotation", f"image id {image_id} ({img['file_name']}): {why}")
    report.images_in_file = len(data["images"])
    report.annotations_in_file = len(annotations)
    report.data = dict(data, images=list(images.values()), annotations=kept, categories=list(categories.values()))
    report.num_images, report.num_annotations = len(images), len(kept)
    return report
