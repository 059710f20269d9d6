"""What cleaning a COCO json keeps and leaves out: the reasons a record is dropped, repaired or noted
(:data:`DROPPED`, :data:`REPAIRED`, :data:`NOTED`) and :class:`CleanedCoco`, the usable records with
every other one counted by reason, its summary line and the check that stops a run on an unusable set.
:func:`detection.annotations.clean_coco` fills it. No torch here.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Dict, List, Optional

from engine.data import DataError

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
