"""Every problem of a COCO-format dataset, counted, with examples: what ``tools/check_dataset.py`` prints.

Errors make training or evaluation stop (missing files, sizes that disagree, a file with no usable
annotation or too many dropped). "dropped" and "repaired" records are the ones
:func:`detection.annotations.clean_coco` leaves out or fixes for training and evaluation alike (null
boxes, bad polygons, duplicates, ids that point nowhere, ...), each named here. Warnings and notes
are handled but worth knowing (decoder warnings, unused categories, annotation id 0, clipped boxes,
empty segmentations, crowd regions).
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import Counter, OrderedDict
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List

import numpy as np

from engine.data import DataError

from .annotations import DEFAULT_MAX_DROPPED_FRACTION, DROPPED, NOTED, REPAIRED, clean_coco
from .coco import read_coco_image, read_json

# code: (severity, what it means). The record-level codes are detection.annotations' reasons: what
# training and evaluation drop ("dropped") or repair ("repaired") is exactly what is listed here.
PROBLEMS = OrderedDict(
    [("invalid_json", ("error", "the annotation file cannot be read as JSON")),
     ("schema", ("error", "missing or wrongly typed top-level keys (images, annotations, categories)")),
     ("missing_file", ("error", "image files not found")),
     ("unreadable_file", ("error", "image files that OpenCV cannot decode")),
     ("size_mismatch", ("error", "json width/height differ from the decoded image")),
     ("unusable", ("error", "training and evaluation would stop on this file"))]
    + [(code, ("dropped", meaning)) for code, meaning in DROPPED.items()]
    + [(code, ("repaired", meaning)) for code, meaning in REPAIRED.items()]
    + [("decoder_warning", ("warning", "images the decoder warned about (decoded anyway; the picture may be damaged)")),
       ("duplicate_file_name", ("warning", "file names used by more than one image record")),
       ("unused_category", ("warning", "categories no annotation of this file uses (in a training set: left out of "
                                       "the label space)")),
       ("duplicate_category_name", ("warning", "category names shared by several ids (the per-category AP table "
                                               "adds the id to tell them apart)")),
       ("annotation_id_zero", ("warning", "annotation id 0 (evaluation renumbers ids: COCOeval cannot match id 0)")),
       ("bbox_clipped", ("warning", NOTED["bbox_clipped"])),
       ("empty_segmentation", ("note", NOTED["empty_segmentation"])),
       ("crowd", ("note", "crowd regions (iscrowd 1): not training targets, ignored regions in evaluation")),
       ("area_not_polygon_area", ("note", "annotations whose area differs from their polygons' area by more than "
                                          "10% and half the perimeter (COCO's small/medium/large ranges use area, "
                                          "for masks too)"))])
# Codes summarised in one line, without examples (a box-only export has one per annotation).
ONE_LINE = ("empty_segmentation", "crowd", "area_not_polygon_area")
SEVERITIES = ("error", "dropped", "repaired", "warning", "note")


class DatasetReport:
    """Counts and examples per problem code; ``cleaning`` is the :class:`detection.annotations.CleanedCoco`."""

    def __init__(self, json_path: str, max_examples: int = 5):
        self.json_path = json_path
        self.max_examples = max_examples
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}
        self.summary: Dict[str, int] = {}
        self.cleaning = None

    def add(self, code: str, example: str, n: int = 1) -> None:
        if code not in PROBLEMS:
            raise KeyError(code)
        self.counts[code] += n
        examples = self.examples.setdefault(code, [])
        if example and len(examples) < self.max_examples:
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
                n = self.counts[code]
                if code == "no_usable_annotation":
                    meaning = f"{n} images left with no usable annotation: " + meaning
                lines.append(f"{severity.upper():8s} {code} ({n}): {meaning}")
                if code not in ONE_LINE:
                    lines.extend(f"    {e}" for e in self.examples.get(code, []))
        counts = {sev: self.count(sev) for sev in SEVERITIES}
        text = ", ".join(f"{n} {sev if sev in ('dropped', 'repaired') else sev + '(s)'}" for sev, n in counts.items()
                         if sev != "note")
        if counts["error"]:
            verdict = " - training and evaluation would stop: fix the errors"
        elif counts["dropped"] or counts["repaired"]:
            verdict = " - usable: training and evaluation leave out or repair the records listed"
        else:
            verdict = " - the dataset is usable"
        lines.append(f"summary: {text}{verdict}")
        return "\n".join(lines)


def _probe_file(path: str, image_id):
    """(problem, detail, decoder warning) of one image file: ``problem`` is missing_file,
    unreadable_file or None (``detail`` is then the decoded (h, w)). What libjpeg and libpng print
    to the C stderr while decoding is captured (fd 2 redirected to a file) and returned, so that the
    report names the file it belongs to; OpenCV offers no hook for those messages."""
    if not os.path.isfile(path):
        return "missing_file", path, ""
    from engine.image_io import c_stderr_to, message_lines  # OpenCV: loaded with the first image

    with tempfile.TemporaryFile() as capture:
        with c_stderr_to(capture):
            try:
                shape = read_coco_image(path, image_id).shape[:2]
                problem, detail = None, tuple(shape)
            except DataError as e:
                problem, detail = "unreadable_file", str(e)
        capture.seek(0)
        warning = capture.read().decode("utf-8", "replace")
    return problem, detail, message_lines(warning)


def _probe_many(items):
    return [_probe_file(path, image_id) for path, image_id in items]


def _check_files(images: List[dict], images_dir: str, report: DatasetReport, num_threads: int) -> None:
    items = [(os.path.join(images_dir, img["file_name"]), img["id"]) for img in images]
    if num_threads <= 1 or len(items) < 16:
        probes = _probe_many(items)
    else:
        # Processes, not threads: fd 2 belongs to the whole process, so each worker redirects its own.
        chunks = [items[i::num_threads] for i in range(num_threads)]
        with ProcessPoolExecutor(max_workers=num_threads, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_probe_many, chunks))
        probes = [None] * len(items)
        for k, part in enumerate(parts):
            probes[k::num_threads] = part
    for img, (path, _), (problem, detail, warning) in zip(images, items, probes):
        if warning:
            report.add("decoder_warning", f"image id {img['id']}: {path}: {warning}")
        if problem == "missing_file":
            report.add(problem, f"image id {img['id']}: {path}")
        elif problem == "unreadable_file":
            report.add(problem, detail)
        elif tuple(detail) != (img["height"], img["width"]):
            report.add("size_mismatch", f"image id {img['id']}: {path} is {detail[1]}x{detail[0]}, "
                                        f"the json says {img['width']}x{img['height']} (w x h)")


def _check_extras(data: dict, report: DatasetReport) -> None:
    """What the cleaning keeps but a user should hear about: shared file names, shared category names,
    unused categories, annotation id 0, crowd regions."""
    file_names = Counter(img["file_name"] for img in data["images"])
    for name, n in file_names.items():
        if n > 1:
            report.add("duplicate_file_name", f"{name}: {n} image records")
    names = Counter(cat.get("name") for cat in data["categories"])
    for name, n in names.items():
        if n > 1:
            ids = [cat["id"] for cat in data["categories"] if cat.get("name") == name]
            report.add("duplicate_category_name", f"{name!r}: category ids {ids}")
    used = Counter(ann["category_id"] for ann in data["annotations"])
    for cat in data["categories"]:
        if cat["id"] not in used:
            report.add("unused_category", f"category id {cat['id']} {cat.get('name')!r} "
                                          f"(supercategory {cat.get('supercategory')!r})")
    for ann in data["annotations"]:
        if ann["id"] == 0:
            report.add("annotation_id_zero", f"annotation id 0 (image id {ann['image_id']})")
    crowd = sum(1 for ann in data["annotations"] if ann.get("iscrowd", 0))
    if crowd:
        report.add("crowd", "", crowd)
    differs = 0
    for ann in data["annotations"]:
        segm = ann.get("segmentation")
        if isinstance(segm, list) and segm and not ann.get("iscrowd", 0):
            # the shoelace area of the (validated) polygons: no rasterising, so it stays cheap on COCO.
            # Slack of half the perimeter: a mask's pixel count (COCO's area) differs from the
            # polygon's exact area by about that much on small objects.
            area = perimeter = 0.0
            for q in segm:
                x, y = np.asarray(q[0::2], dtype=np.float64), np.asarray(q[1::2], dtype=np.float64)
                area += abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2
                perimeter += float(np.hypot(x - np.roll(x, 1), y - np.roll(y, 1)).sum())
            if area > 0 and abs(ann["area"] - area) > 0.1 * area + 0.5 * perimeter:
                differs += 1
    if differs:
        report.add("area_not_polygon_area", "", differs)


def check_dataset(json_path: str, images_dir: str, max_examples: int = 5, num_threads: int = 8,
                  check_files: bool = True,
                  max_dropped_fraction: float = DEFAULT_MAX_DROPPED_FRACTION) -> DatasetReport:
    """Check a COCO json and its image folder; returns a :class:`DatasetReport`.

    ``max_dropped_fraction``: as training's ``data.max_dropped_fraction``, an error when more of the
    annotations are dropped than this."""
    report = DatasetReport(json_path, max_examples)
    try:  # the reading every run does (detection.coco: orjson, then the standard library's message)
        data = read_json(json_path)
    except DataError as e:
        report.add("invalid_json", str(e))
        return report
    if not isinstance(data, dict):
        report.add("schema", f"top level is a {type(data).__name__}, expected an object")
        return report
    lists = {}
    for key in ("images", "annotations", "categories"):
        if key not in data:
            report.add("schema", f"missing key '{key}'" + (": nothing to train on or evaluate against"
                                                           if key == "annotations" else ""))
        elif not isinstance(data[key], list):
            report.add("schema", f"'{key}' is a {type(data[key]).__name__}, expected a list")
        lists[key] = data[key] if isinstance(data.get(key), list) else []
    cleaning = report.cleaning = clean_coco(dict(data, **lists), json_path, max_examples)
    for code, n in cleaning.counts.items():
        for example in cleaning.examples.get(code, []):
            report.add(code, example, 0)
        report.counts[code] += n
    _check_extras(cleaning.data, report)
    report.summary = {"images": len(lists["images"]), "annotations": len(lists["annotations"]),
                      "categories": len(lists["categories"])}
    if "annotations" in data and isinstance(data["annotations"], list):
        try:
            cleaning.require_usable(max_dropped_fraction, key="--max-dropped-fraction")
        except DataError as e:
            report.add("unusable", str(e).replace(f"{json_path}: ", "", 1))
    if check_files:
        _check_files(cleaning.data["images"], images_dir, report, num_threads)
    return report
