"""Every problem of a COCO-format dataset, counted, with examples: what ``tools/check_dataset.py`` prints.

Errors make training or evaluation fail or go wrong (missing files, sizes that disagree, unusable
boxes, ids that point nowhere, duplicates, malformed records). Warnings are handled by the data
pipeline but worth knowing (boxes clipped to the image, empty segmentations).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from engine.data import DataError

from .coco import read_coco_image
from .masks import valid_polygons

# code: (severity, what it means)
PROBLEMS = OrderedDict([
    ("invalid_json", ("error", "the annotation file cannot be read as JSON")),
    ("schema", ("error", "missing or wrongly typed top-level keys (images, annotations, categories)")),
    ("bad_image_record", ("error", "image records without a valid id, file_name, width or height")),
    ("bad_category_record", ("error", "category records without a valid id or name")),
    ("bad_annotation_record", ("error", "annotation records without a valid id, image_id or category_id")),
    ("duplicate_image_id", ("error", "image ids used more than once")),
    ("duplicate_category_id", ("error", "category ids used more than once")),
    ("duplicate_annotation_id", ("error", "annotation ids used more than once")),
    ("unknown_image_id", ("error", "annotations pointing at an image id that is not in images")),
    ("unknown_category_id", ("error", "annotations with a category id that is not in categories")),
    ("malformed_bbox", ("error", "bbox is not [x, y, w, h] of finite numbers")),
    ("empty_bbox", ("error", "boxes of zero or negative width or height (dropped in training)")),
    ("bbox_outside_image", ("error", "boxes wholly outside their image (dropped in training)")),
    ("missing_area", ("error", "annotations without a numeric area (COCO evaluation needs it)")),
    ("bad_iscrowd", ("error", "iscrowd other than 0 or 1")),
    ("malformed_segmentation", ("error", "segmentations that are neither polygons nor an RLE of the image's size")),
    ("missing_file", ("error", "image files not found")),
    ("unreadable_file", ("error", "image files that OpenCV cannot decode")),
    ("size_mismatch", ("error", "json width/height differ from the decoded image")),
    ("duplicate_file_name", ("warning", "file names used by more than one image record")),
    ("bbox_clipped", ("warning", "boxes reaching outside their image (clipped in training)")),
    ("empty_segmentation", ("warning", "empty segmentation lists (no mask: dropped from mask training)")),
])


class DatasetReport:
    """Counts and examples per problem code."""

    def __init__(self, json_path: str, max_examples: int = 5):
        self.json_path = json_path
        self.max_examples = max_examples
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}
        self.summary: Dict[str, int] = {}

    def add(self, code: str, example: str) -> None:
        if code not in PROBLEMS:
            raise KeyError(code)
        self.counts[code] += 1
        examples = self.examples.setdefault(code, [])
        if len(examples) < self.max_examples:
            examples.append(example)

    def count(self, severity: str) -> int:
        return sum(n for code, n in self.counts.items() if PROBLEMS[code][0] == severity)

    @property
    def has_errors(self) -> bool:
        return self.count("error") > 0

    def format(self) -> str:
        head = ", ".join(f"{v} {k}" for k, v in self.summary.items())
        lines = [f"{self.json_path}: {head}" if head else self.json_path]
        for code, (severity, meaning) in PROBLEMS.items():
            if self.counts[code]:
                lines.append(f"{severity.upper():7s} {code} ({self.counts[code]}): {meaning}")
                lines.extend(f"    {e}" for e in self.examples[code])
        errors, warnings = self.count("error"), self.count("warning")
        lines.append(f"summary: {errors} error(s), {warnings} warning(s)"
                     + ("" if errors else " - the dataset is usable"))
        return "\n".join(lines)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_images(images: list, report: DatasetReport) -> Dict[int, dict]:
    by_id: Dict[int, dict] = {}
    file_names: Counter = Counter()
    for i, img in enumerate(images):
        if not (isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str)
                and _is_int(img.get("width")) and _is_int(img.get("height"))
                and img["width"] > 0 and img["height"] > 0):
            report.add("bad_image_record", f"images[{i}]: {json.dumps(img)[:120]}")
            continue
        if img["id"] in by_id:
            report.add("duplicate_image_id", f"image id {img['id']} (images[{i}], {img['file_name']})")
            continue
        by_id[img["id"]] = img
        file_names[img["file_name"]] += 1
    for name, n in file_names.items():
        if n > 1:
            report.add("duplicate_file_name", f"{name}: {n} image records")
    return by_id


def _check_categories(categories: list, report: DatasetReport) -> set:
    ids = set()
    for i, cat in enumerate(categories):
        if not (isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)):
            report.add("bad_category_record", f"categories[{i}]: {json.dumps(cat)[:120]}")
            continue
        if cat["id"] in ids:
            report.add("duplicate_category_id", f"category id {cat['id']} (categories[{i}], {cat['name']})")
        ids.add(cat["id"])
    return ids


def _check_segmentation(segm, img: Optional[dict], where: str, report: DatasetReport) -> None:
    if isinstance(segm, list):
        if len(segm) == 0:
            report.add("empty_segmentation", where)
        elif len(valid_polygons(segm)) != len(segm) or not all(_is_number(v) for p in segm for v in p):
            report.add("malformed_segmentation", f"{where}: polygons need 3+ (x, y) pairs of numbers")
    elif isinstance(segm, dict):
        size = segm.get("size")
        if "counts" not in segm or not (isinstance(size, list) and len(size) == 2):
            report.add("malformed_segmentation", f"{where}: an RLE needs counts and size [h, w]")
        elif img is not None and list(size) != [img["height"], img["width"]]:
            report.add("malformed_segmentation", f"{where}: RLE size {size} but the image is "
                                                 f"{img['height']}x{img['width']} (h x w)")
    else:
        report.add("malformed_segmentation", f"{where}: {type(segm).__name__} is not a segmentation")


def _check_annotations(annotations: list, images: Dict[int, dict], category_ids: set,
                       report: DatasetReport) -> None:
    seen = set()
    for i, ann in enumerate(annotations):
        if not (isinstance(ann, dict) and _is_int(ann.get("id")) and "image_id" in ann and "category_id" in ann):
            report.add("bad_annotation_record", f"annotations[{i}]: {json.dumps(ann)[:120]}")
            continue
        where = f"annotation id {ann['id']} (image id {ann['image_id']})"
        if ann["id"] in seen:
            report.add("duplicate_annotation_id", f"annotation id {ann['id']} (annotations[{i}])")
        seen.add(ann["id"])
        img = images.get(ann["image_id"])
        if img is None:
            report.add("unknown_image_id", where)
        if ann["category_id"] not in category_ids:
            report.add("unknown_category_id", f"{where}: category_id {ann['category_id']}")
        if not _is_number(ann.get("area")):
            report.add("missing_area", where)
        if ann.get("iscrowd", 0) not in (0, 1):
            report.add("bad_iscrowd", f"{where}: iscrowd {ann.get('iscrowd')!r}")
        if "segmentation" in ann:
            _check_segmentation(ann["segmentation"], img, where, report)
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            report.add("malformed_bbox", f"{where}: bbox {bbox!r}")
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            report.add("empty_bbox", f"{where}: bbox {bbox}")
        elif img is not None:
            W, H = img["width"], img["height"]
            if x >= W or y >= H or x + w <= 0 or y + h <= 0:
                report.add("bbox_outside_image", f"{where}: bbox {bbox}, image {W}x{H} (w x h)")
            elif x < 0 or y < 0 or x + w > W or y + h > H:
                report.add("bbox_clipped", f"{where}: bbox {bbox}, image {W}x{H} (w x h)")


def _check_files(images: Dict[int, dict], images_dir: str, report: DatasetReport, num_threads: int) -> None:
    def probe(img: dict):
        path = os.path.join(images_dir, img["file_name"])
        if not os.path.isfile(path):
            return "missing_file", path, None
        try:
            return None, path, read_coco_image(path, img["id"]).shape[:2]
        except DataError as e:
            return "unreadable_file", path, str(e)

    records = list(images.values())
    # OpenCV releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for img, (problem, path, detail) in zip(records, pool.map(probe, records)):
            if problem == "missing_file":
                report.add(problem, f"image id {img['id']}: {path}")
            elif problem == "unreadable_file":
                report.add(problem, detail)
            elif tuple(detail) != (img["height"], img["width"]):
                report.add("size_mismatch", f"image id {img['id']}: {path} is {detail[1]}x{detail[0]}, "
                                            f"the json says {img['width']}x{img['height']} (w x h)")


def check_dataset(json_path: str, images_dir: str, max_examples: int = 5,
                  num_threads: int = 8, check_files: bool = True) -> DatasetReport:
    """Check a COCO json and its image folder; returns a :class:`DatasetReport`."""
    report = DatasetReport(json_path, max_examples)
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        report.add("invalid_json", f"{json_path}: file not found")
        return report
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.add("invalid_json", f"{json_path}: {e}")
        return report
    if not isinstance(data, dict):
        report.add("schema", f"top level is a {type(data).__name__}, expected an object")
        return report
    lists = {}
    for key in ("images", "annotations", "categories"):
        if key not in data:
            report.add("schema", f"missing key '{key}'")
        elif not isinstance(data[key], list):
            report.add("schema", f"'{key}' is a {type(data[key]).__name__}, expected a list")
        lists[key] = data[key] if isinstance(data.get(key), list) else []
    images = _check_images(lists["images"], report)
    category_ids = _check_categories(lists["categories"], report)
    _check_annotations(lists["annotations"], images, category_ids, report)
    report.summary = {"images": len(lists["images"]), "annotations": len(lists["annotations"]),
                      "categories": len(lists["categories"])}
    if check_files:
        _check_files(images, images_dir, report, num_threads)
    return report
