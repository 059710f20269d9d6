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

No torch here (``tools/check_dataset.py`` and ``tools/eval_coco.py`` start without it).
"""
from __future__ import annotations

import math
import numbers
from collections import Counter, OrderedDict
from itertools import chain
from typing import Dict, List, Optional

import numpy as np

from engine.data import DataError

__all__ = ["DROPPED", "REPAIRED", "NOTED", "CleanedCoco", "clean_coco", "rle_is_valid",
           "DEFAULT_MAX_DROPPED_FRACTION"]

# The share of a training set's annotations that may be dropped before a run stops (data.max_dropped_fraction).
DEFAULT_MAX_DROPPED_FRACTION = 0.25

DROPPED = OrderedDict([
    ("bad_image_record", "image records without an integer id, a file_name, or positive integer width and height"),
    ("duplicate_image_id", "image records whose id an earlier record has (the first is kept)"),
    ("bad_category_record", "category records without an integer id"),
    ("duplicate_category_id", "category records whose id an earlier record has (the first is kept)"),
    ("bad_annotation_record", "annotations that are not objects with an integer id, image_id and category_id"),
    ("duplicate_annotation_id", "annotations whose id an earlier annotation has (the first is kept)"),
    ("unknown_image_id", "annotations pointing at an image id that is not (or no longer) in images"),
    ("unknown_category_id", "annotations with a category id that is not in categories"),
    ("bad_iscrowd", "annotations with an iscrowd other than 0 or 1"),
    ("malformed_bbox", "bbox is not [x, y, w, h] of finite numbers (null, NaN, text, wrong length)"),
    ("empty_bbox", "boxes of zero or negative width or height"),
    ("bbox_outside_image", "boxes wholly outside their image (nothing left after clipping)"),
    ("no_usable_annotation", "images whose every annotation was dropped, left out of training and evaluation "
                             "(they are not pictures of nothing; an image the file gives no annotation stays, "
                             "as background)"),
])
REPAIRED = OrderedDict([
    ("bad_polygon", "polygons with fewer than 3 points, an odd number of coordinates or non-numbers (the "
                    "polygon is removed; an instance left without one has no mask)"),
    ("bad_rle", "RLE masks whose size differs from the image or whose run lengths do not cover it (the mask "
                "is removed, the box kept)"),
    ("polygon_outside_image", "polygons lying wholly outside their image (removed like boxes outside it; an "
                              "instance left without a polygon has no mask)"),
    ("missing_area", "annotations without a numeric area (the box area w*h is used)"),
])
NOTED = OrderedDict([
    ("bbox_clipped", "boxes reaching outside their image (clipped to it in training)"),
    ("empty_segmentation", "annotations without a segmentation (box only: no mask for Mask R-CNN)"),
])


class CleanedCoco:
    """The usable part of a COCO json and what was left out.

    ``data``: the json with only usable records (``images``, ``annotations``, ``categories``; other
    keys as they were); repaired annotations are copies, the input is not modified. ``counts``:
    {reason: n} over :data:`DROPPED`, :data:`REPAIRED`, :data:`NOTED`; ``examples``: {reason: [text]}.
    ``annotations_in_file``: annotation records in the file; ``missing_annotations``: the json had no
    ``annotations`` key.
    """

    def __init__(self, source: str, max_examples: int):
        self.source = source
        self.max_examples = max_examples
        self.data: dict = {}
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}
        self.annotations_in_file = 0
        self.images_in_file = 0
        self.missing_annotations = False
        self.num_images = 0  # kept image records
        self.num_annotations = 0  # kept annotations
        self.left_out_images: List[int] = []  # ids of the images whose every annotation was dropped

    _META_KEYS = ("source", "max_examples", "annotations_in_file", "images_in_file", "missing_annotations",
                  "num_images", "num_annotations", "left_out_images")

    def to_meta(self) -> dict:
        """Everything but ``data``, json-able (what :mod:`engine.cache` stores beside the arrays)."""
        meta = {k: getattr(self, k) for k in self._META_KEYS}
        meta.update(counts=dict(self.counts), examples=self.examples)
        return meta

    @classmethod
    def from_meta(cls, meta: dict, source: Optional[str] = None) -> "CleanedCoco":
        """The report :meth:`to_meta` wrote (``data`` left empty: the records live in flat arrays)."""
        report = cls(meta["source"], meta["max_examples"])
        for k in cls._META_KEYS:
            setattr(report, k, meta[k])
        report.counts.update(meta["counts"])
        report.examples = {k: list(v) for k, v in meta["examples"].items()}
        if source is not None:
            report.source = source
        return report

    def add(self, reason: str, example) -> None:
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(str(example))

    def dropped(self, annotations_only: bool = True) -> Dict[str, int]:
        """{reason: n} of the dropped records (by default the annotation reasons only)."""
        image_or_category = ("bad_image_record", "duplicate_image_id", "bad_category_record", "duplicate_category_id",
                             "no_usable_annotation")
        return {r: self.counts[r] for r in DROPPED
                if self.counts[r] and not (annotations_only and r in image_or_category)}

    @property
    def dropped_annotations(self) -> int:
        return sum(self.dropped().values())

    def summary(self) -> str:
        """One line: what is kept, and every reason that dropped or repaired something, with counts."""
        kept = f"{self.num_images} images, {self.num_annotations} annotations"
        changed = [f"{n} {r}" for r, n in self.counts.items() if n and r in DROPPED]
        repaired = [f"{n} {r}" for r, n in self.counts.items() if n and r in REPAIRED]
        text = f"{self.source}: {kept}"
        if self.missing_annotations:
            text += " (no 'annotations' key)"
        if changed:
            text += "; dropped: " + ", ".join(changed)
        if repaired:
            text += "; repaired: " + ", ".join(repaired)
        return text

    def require_usable(self, max_dropped_fraction: float = 1.0, key: str = "data.max_dropped_fraction") -> None:
        """Stop (DataError, one line) when the set has no usable annotation, or when more than
        ``max_dropped_fraction`` of its annotations were dropped."""
        where = f"{self.source}"
        hint = f"run tools/check_dataset.py --json {self.source} --images DIR to see each record"
        if self.missing_annotations:
            raise DataError(f"{where}: no 'annotations' key, so nothing to train on or evaluate against; "
                            "add the annotations (a json of images only is no training or validation set)")
        dropped_by = self.dropped()
        reasons = ", ".join(f"{n} {r}" for r, n in dropped_by.items())
        if dropped_by:  # the first record of the commonest reason, so that the line names one
            top = max(dropped_by, key=dropped_by.get)
            reasons += f"; e.g. {self.examples[top][0]}"
        if not self.num_annotations:
            raise DataError(f"{where}: none of its {self.annotations_in_file} annotations is usable"
                            + (f" ({reasons})" if reasons else "") + f"; {hint}")
        dropped = self.dropped_annotations
        if self.annotations_in_file and dropped / self.annotations_in_file > max_dropped_fraction:
            raise DataError(f"{where}: {dropped} of {self.annotations_in_file} annotations "
                            f"({100.0 * dropped / self.annotations_in_file:.0f}%) are unusable ({reasons}), more "
                            f"than {key}={max_dropped_fraction}; fix the json ({hint}) or raise {key}")


# The JSON decoder gives int and float: those are tested by type first, because the abstract-class
# check (numbers.Real) costs ~1 µs a value, which is half of validating a 2000-record results file
# (benchmarks/eval_startup.py). Other number types (numpy scalars) take the general test.
def _is_int(v) -> bool:
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def _is_number(v) -> bool:
    t = type(v)
    if t is float:
        return math.isfinite(v)
    if t is int:
        return True
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_PLAIN_NUMBERS = {int, float}


def _all_numbers(values: list) -> bool:
    """``all(_is_number(v) for v in values)``, at C speed for the json decoder's int and float (a
    polygon has dozens of coordinates: a call per value was most of the time to clean COCO)."""
    types = set(map(type, values))
    if types <= _PLAIN_NUMBERS:
        try:
            return float not in types or all(map(math.isfinite, values))
        except OverflowError:  # an int too large for a float
            return False
    return all(_is_number(v) for v in values)


def _box_numbers(bbox: list) -> bool:
    """``_all_numbers`` for the four values of a box, written out: it runs once per annotation."""
    x, y, w, h = bbox
    try:
        if type(x) in _PLAIN_NUMBERS and type(y) in _PLAIN_NUMBERS and type(w) in _PLAIN_NUMBERS \
                and type(h) in _PLAIN_NUMBERS and math.isfinite(x + y + w + h):
            return True
    except OverflowError:
        pass
    return all(_is_number(v) for v in bbox)  # unusual types, or a sum past the float range


def _rle_string_counts(s: str) -> Optional[List[int]]:
    """The run lengths of a compressed RLE string, decoded as pycocotools' ``rleFrString`` does
    (written out because pycocotools decodes a corrupt string into uninitialised memory instead of
    failing); None when the string ends inside a number."""
    counts: List[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_is_valid(rle: dict, height: Optional[int] = None, width: Optional[int] = None) -> bool:
    """True when ``rle`` has a size [h, w] (the image's, when given) and run lengths ≥ 0 covering h*w."""
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
        return False
    if height is not None and list(size) != [height, width]:
        return False
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return False
    if isinstance(counts, str):
        counts = _rle_string_counts(counts)
        if counts is None:
            return False
    if not (isinstance(counts, list) and all(_is_int(v) and v >= 0 for v in counts)):
        return False
    return sum(counts) == size[0] * size[1]


class _Where:
    """"annotation id 7 (image id 3)", written only when a message needs it (formatting it for every
    annotation of COCO cost a second)."""
    __slots__ = ("ann",)

    def __init__(self, ann: dict):
        self.ann = ann

    def __str__(self) -> str:
        return f"annotation id {self.ann['id']} (image id {self.ann['image_id']!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __add__(self, other: str) -> str:
        return str(self) + other


def _polygon_meets_image(p: list, width: int, height: int) -> bool:
    """True when the polygon's bounding box overlaps the image (the rule boxes are held to)."""
    xs, ys = p[0::2], p[1::2]
    return min(max(xs), width) > max(min(xs), 0) and min(max(ys), height) > max(min(ys), 0)


def _well_formed(p) -> bool:
    return type(p) is list and len(p) >= 6 and not len(p) % 2


def _check_polygons(kept: List[dict], pending: List[int], sizes: List[tuple], images: Dict[int, dict],
                    report: CleanedCoco) -> None:
    """The coordinates of every well-formed polygon list at once, with numpy: numbers, finite, inside
    the image (a Python pass per polygon was half the time to clean COCO). The annotations of a
    polygon that fails, or all of them when a coordinate is of an unusual type, go through
    :func:`_clean_segmentation`, which counts and repairs them as it does any other."""
    if not pending:
        return
    polygons = [p for k in pending for p in kept[k]["segmentation"]]
    flagged = pending
    if set(map(type, chain.from_iterable(polygons))) <= _PLAIN_NUMBERS:
        lengths = np.fromiter(map(len, polygons), np.int64, len(polygons))
        try:
            values = np.fromiter(chain.from_iterable(polygons), np.float64, int(lengths.sum()))
        except OverflowError:  # an int too large for a float: one by one
            values = None
        if values is not None:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            size = np.asarray(sizes, dtype=np.float64).reshape(-1, 3)
            per_ann = size[:, 2].astype(np.int64)
            width, height = np.repeat(size[:, 0], per_ann), np.repeat(size[:, 1], per_ann)
            xs, ys, half = values[0::2], values[1::2], starts // 2
            with np.errstate(invalid="ignore"):  # NaN compares False: such a polygon is flagged anyway
                ok = (np.logical_and.reduceat(np.isfinite(values), starts)
                      & (np.minimum(np.maximum.reduceat(xs, half), width) > np.maximum(np.minimum.reduceat(xs, half), 0))
                      & (np.minimum(np.maximum.reduceat(ys, half), height) > np.maximum(np.minimum.reduceat(ys, half), 0)))
            ann_ok = np.logical_and.reduceat(ok, np.concatenate([[0], np.cumsum(per_ann)[:-1]]))
            flagged = [k for k, good in zip(pending, ann_ok.tolist()) if not good]
    for k in flagged:
        ann = kept[k]
        segm, changed = _clean_segmentation(ann["segmentation"], images[ann["image_id"]], _Where(ann), report)
        if changed:
            kept[k] = dict(ann, segmentation=segm)


def _clean_segmentation(segm, img: dict, where: _Where, report: CleanedCoco):
    """(segmentation to keep, changed?) for an annotation's ``segmentation``."""
    if isinstance(segm, list):
        if not segm:
            report.add("empty_segmentation", where)
            return segm, False
        good = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and _all_numbers(p)]
        changed = len(good) != len(segm)
        if changed:
            bad = next(p for p in segm if p not in good)
            report.add("bad_polygon", f"{where}: polygon {str(bad)[:60]} ({len(good)} of {len(segm)} kept)")
        W, H = img["width"], img["height"]
        inside = [p for p in good if _polygon_meets_image(p, W, H)]
        if len(inside) != len(good):
            out = next(p for p in good if p not in inside)
            report.add("polygon_outside_image", f"{where}: polygon {str(out)[:60]} lies outside the {W}x{H} "
                                                f"(w x h) image ({len(inside)} of {len(segm)} kept)")
            return inside, True
        return (good, True) if changed else (segm, False)
    if isinstance(segm, dict):
        if rle_is_valid(segm, img["height"], img["width"]):
            return segm, False
        size = segm.get("size")
        if isinstance(size, list) and size == [img["height"], img["width"]]:
            report.add("bad_rle", f"{where}: RLE run lengths (counts) do not add up to its {size[0]}x{size[1]} "
                                  "(h x w) size: the mask is corrupt")
        else:
            report.add("bad_rle", f"{where}: RLE of size {size!r}, but the image is {img['height']}x{img['width']} "
                                  "(h x w)")
        return [], True
    report.add("bad_polygon", f"{where}: a {type(segm).__name__} is no segmentation")
    return [], True


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
