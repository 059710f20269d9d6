"""The detection / instance segmentation report: what a COCO evaluation found, on one page.

Sections (engine.report draws the page): the 12 COCO numbers for bbox (and segm); a per-class table
(AP, AP50, AP75, instances, detections, and the outcomes at the report's score threshold), sortable;
precision-recall curves per class at IoU 0.50 and 0.75 (COCOeval's own ``eval["precision"]``); the
confusion matrix at IoU 0.5 and the score threshold, with a background row and column (the HTML
table of engine.confusion, as the other tasks'); COCO's ``analyze()`` error breakdown
(detection.error_analysis); the images with the most errors, drawn (masks where segm is evaluated).

Used by the trainer at a run's final evaluation (``DetectionTask.write_report``) and by
``tools/eval_coco.py --report DIR``; no torch here, so the results-file mode starts without it.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from engine.confusion import add_confusion_matrix
from engine.report import Report

from .error_analysis import AREAS, ERROR_TYPES, analyze, confusion_matrix, image_errors, match_detections
from .evaluation import METRIC_KEYS, _percent, category_names, eval_summary, prepare_ground_truth, run_cocoeval
from .report_draw import (MAX_CURVES, breakdown_figure, breakdown_legend, class_colors, class_order,
                          gallery_items, legend_html, mean_breakdown, pr_figure, swatches_html)

logger = logging.getLogger(__name__)

SECTIONS = ("COCO metrics", "Per class", "Precision-recall", "Confusion matrix", "Error breakdown",
            "Images with the most errors")


def _subset(gt: dict, image_ids: Optional[Iterable[int]]) -> dict:
    if image_ids is None:
        return gt
    keep = {int(i) for i in image_ids}
    out = type(gt)(gt, images=[im for im in gt["images"] if im["id"] in keep],
                   annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    out.cleaning = getattr(gt, "cleaning", None)
    return out


def _segm_records(records: List[dict]) -> List[dict]:
    """What mask AP evaluates (detection.evaluation.run_cocoeval): records with a mask, box removed."""
    return [{k: v for k, v in r.items() if k != "bbox"} for r in records if "segmentation" in r]


def add_detection_sections(report: Report, gt, records: List[dict], iou_types: Sequence[str] = ("bbox",),
                           images_dir: Optional[str] = None, backend: str = "faster_coco_eval",
                           category_ids: Optional[Iterable[int]] = None,
                           image_ids: Optional[Iterable[int]] = None, score_thresh: float = 0.5,
                           gallery_size: int = 9, summaries: Optional[Dict[str, dict]] = None) -> Dict[str, float]:
    """Add the detection sections to ``report`` for the COCO results ``records`` against ``gt``
    (a path, dict or :class:`detection.evaluation.GroundTruth`). ``category_ids``: the model's label
    space (default: every category of the json); ``image_ids``: the images that were run (default:
    all); ``images_dir``: where the json's ``file_name``s are (no gallery without it); ``summaries``:
    the evaluation's own :func:`detection.evaluation.eval_summary` per IoU type when it ran with the
    same arguments (``COCOEvaluator.summaries``), else COCOeval runs again. Returns the seconds each
    part took."""
    times: Dict[str, float] = {}
    start = time.perf_counter()
    gt = _subset(prepare_ground_truth(gt, log=False), image_ids)
    names_by_id = category_names(gt)
    evals = {t: (summaries or {}).get(t) or eval_summary(*run_cocoeval(gt, records, t, backend,
                                                                       category_ids=category_ids))
             for t in iou_types}
    times["evaluation"] = time.perf_counter() - start

    _metrics_section(report, evals)
    cat_ids = list(evals[iou_types[0]]["cat_ids"])
    names = [names_by_id.get(c, str(c)) for c in cat_ids]
    instances = {c: 0 for c in cat_ids}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and a["category_id"] in instances:
            instances[a["category_id"]] += 1
    detections = {c: 0 for c in cat_ids}
    for r in records:
        if r["category_id"] in detections:
            detections[r["category_id"]] += 1
    # Categories with neither objects nor detections (an export's placeholder supercategory) say nothing
    empty = [k for k, c in enumerate(cat_ids) if not instances[c] and not detections[c]]
    if empty and len(empty) < len(cat_ids):
        report.text(f"{len(empty)} categor{'y' if len(empty) == 1 else 'ies'} without objects or detections "
                    f"left out below: {', '.join(names[k] for k in empty[:20])}", "note")
        keep = [k for k in range(len(cat_ids)) if k not in set(empty)]
        cat_ids, names = [cat_ids[k] for k in keep], [names[k] for k in keep]

    t = time.perf_counter()
    matches = match_detections(gt, records, score_thresh)
    cm = confusion_matrix(matches, cat_ids)
    times["matching"] = time.perf_counter() - t
    _per_class_section(report, evals, cat_ids, names, instances, detections, cm, score_thresh)

    order = class_order(instances, cat_ids)
    report.section("Precision-recall")
    report.text("COCOeval's interpolated precision at 101 recall points, area all, up to 100 detections "
                "an image" + (f"; the {MAX_CURVES} classes with the most instances" if len(cat_ids) > MAX_CURVES
                               else ""), "note")
    first = evals[iou_types[0]]
    shown = [k for k in order[:MAX_CURVES] if instances[cat_ids[k]]]  # no ground truth: no curve
    colors = class_colors(len(shown))
    report.image(pr_figure([(_precision_for(ev, cat_ids), t) for t, ev in evals.items()], first["rec_thrs"],
                           first["iou_thrs"], shown, colors),
                 f"precision-recall per class at IoU 0.50 (solid) and 0.75 (dashed), "
                 f"{' and '.join(evals)}; the AP of each in the per-class table")
    report.html(swatches_html([(names[k], c) for k, c in zip(shown, colors)], "IoU 0.50 solid, 0.75 dashed"))

    report.section("Confusion matrix")
    report.text(f"Box IoU >= 0.5, detections scoring >= {score_thresh:g}, one-to-one: each detection "
                "(highest score first) takes the unmatched object of its own class with the highest IoU, "
                "else one of another class (a confusion); a detection left over is a false positive "
                "(background row), an object nobody took is missed (background column).", "note")
    add_confusion_matrix(report, cm, [*names, "background"], unit="objects", background=True)

    t = time.perf_counter()
    _breakdown_section(report, gt, records, iou_types, backend, cat_ids, names, instances)
    times["error breakdown"] = time.perf_counter() - t

    t = time.perf_counter()
    _gallery_section(report, gt, matches, images_dir, names_by_id, score_thresh, gallery_size,
                     masks="segm" in iou_types)
    times["gallery"] = time.perf_counter() - t
    return times


def _precision_for(ev, cat_ids: Sequence[int]) -> np.ndarray:
    """COCOeval's precision [T, R, K, A, M] with its K axis in ``cat_ids`` order (-1: not evaluated)."""
    precision = ev["precision"]
    index = {c: k for k, c in enumerate(ev["cat_ids"])}
    out = np.full(precision.shape[:2] + (len(cat_ids),) + precision.shape[3:], -1.0)
    for k, c in enumerate(cat_ids):
        if c in index:
            out[:, :, k] = precision[:, :, index[c]]
    return out


def _metrics_section(report: Report, evals: dict) -> None:
    report.section("COCO metrics")
    report.text("COCOeval's 12 numbers in percent (n/a: no object of that size)", "note")
    rows = [[iou_type] + [_percent(v) for v in ev["stats"][:12]] for iou_type, ev in evals.items()]
    report.table(["type", *METRIC_KEYS], rows, sortable=False, digits=1)


def _per_class_ap(precision: np.ndarray, iou_thrs: np.ndarray, k: int) -> List[float]:
    out = []
    for t in (None, 0.5, 0.75):
        p = precision[:, :, k, 0, -1] if t is None else precision[int(np.argmin(np.abs(iou_thrs - t))), :, k, 0, -1]
        p = p[p > -1]
        out.append(float(np.mean(p)) * 100 if p.size else float("nan"))
    return out


def _per_class_section(report, evals, cat_ids, names, instances, detections, cm, score_thresh) -> None:
    report.section("Per class")
    report.text(f"AP columns in percent; instances: ground-truth objects (crowd regions left out); detections: "
                f"all of that class; the last four columns at box IoU 0.5 and score >= {score_thresh:g}. "
                "Click a column to sort.", "note")
    columns = ["class"]
    for iou_type in evals:
        columns += [f"{iou_type} AP", f"{iou_type} AP50", f"{iou_type} AP75"]
    columns += ["instances", "detections", "true pos.", "wrong class", "false pos.", "missed"]
    k_all = len(cat_ids)
    rows = []
    for k, c in enumerate(cat_ids):
        row: list = [names[k]]
        for ev in evals.values():
            row += _per_class_ap(ev["precision"], ev["iou_thrs"], ev["cat_ids"].index(c)) \
                if c in ev["cat_ids"] else [float("nan")] * 3
        row += [instances[c], detections[c], int(cm[k, k]), int(cm[:k_all, k].sum() - cm[k, k]),
                int(cm[k_all, k]), int(cm[k, k_all])]
        rows.append(row)
    report.table(columns, rows, sortable=True)


def _breakdown_section(report, gt, records, iou_types, backend, cat_ids, names, instances) -> None:
    report.section("Error breakdown")
    report.text("COCO's analyze() (the COCO API's CocoEval.analyze, as in Detectron's analysis plots): "
                "cumulative PR curves at up to 100 detections an image. C75, C50: PR at IoU 0.75, 0.50; "
                "Loc: at IoU 0.10 (localisation errors forgiven); Sim: detections on objects of the same "
                "supercategory forgiven; Oth: on any other class forgiven; BG: background false positives "
                "removed; FN: the missed objects' share. Each band is what fixing that kind of error would "
                "add; the tables below give the AP under each curve. Means over the classes with ground truth.",
                "note")
    with_gt = np.array([instances.get(c, 0) > 0 for c in cat_ids], dtype=bool)
    results, sizes = {}, set()
    for iou_type in iou_types:
        gt_t, recs = (gt, records) if iou_type == "bbox" else (_segm_gt(gt), _segm_records(records))
        results[iou_type] = analyze(gt_t, recs, iou_type, backend, cat_ids)
        sizes |= set(_sizes_with_objects(gt_t))
    recall = results[iou_types[0]][1]
    means = {t: mean_breakdown(ps, with_gt) for t, (ps, _, _) in results.items()}  # [7, R, 4] each
    report.image(breakdown_figure([(m[:, :, 0], t) for t, m in means.items()], recall),
                 f"error breakdown (COCO analyze), {' and '.join(means)}, mean over classes, all sizes")
    report.html(breakdown_legend())
    rows = [[f"{t} {AREAS[a]}", *(m[i, :, a].mean() * 100 for i in range(7))]
            for t, m in means.items() for a in sorted(sizes)]
    left_out = [AREAS[a] for a in range(1, 4) if a not in sizes]
    report.table(["type, size", *ERROR_TYPES], rows, sortable=False, digits=1,
                 caption="AP (percent) under each curve, mean over classes, by COCO object size"
                 + (f" ({', '.join(left_out)}: no objects of that size)" if left_out else ""))
    for iou_type, (ps, _, _) in results.items():
        rows = [[names[k], *(ps[i, :, k, 0].mean() * 100 for i in range(7))]
                for k in range(len(cat_ids)) if with_gt[k]]
        report.table(["class", *ERROR_TYPES], rows, caption=f"{iou_type}: AP (percent) under each curve "
                     "per class, all sizes", digits=1)


def _sizes_with_objects(gt: dict) -> List[int]:
    """Indices into AREAS of "all" and of the COCO sizes that have non-crowd objects."""
    bounds = ((0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, float("inf")))
    areas = [a.get("area", 0) for a in gt["annotations"] if not a.get("iscrowd", 0)]
    return [0] + [i + 1 for i, (lo, hi) in enumerate(bounds) if any(lo <= v < hi for v in areas)]


def _segm_gt(gt):
    from .evaluation import _segm_ground_truth

    return _segm_ground_truth(gt)


def _gallery_section(report, gt, matches, images_dir, names_by_id, score_thresh, gallery_size, masks) -> None:
    report.section("Images with the most errors")
    ranked = sorted(((i, e, image_errors(e)) for i, e in matches.items()), key=lambda x: (-x[2], x[0]))
    ranked = [x for x in ranked if x[2] > 0][:gallery_size]
    if not images_dir:
        report.text("no image folder given (tools/eval_coco.py --images DIR): the images are not drawn", "warn")
        return
    if not ranked:
        report.text(f"no errors at IoU 0.5 and score >= {score_thresh:g}", "note")
        return
    images = {im["id"]: im for im in gt["images"]}
    items, missing = gallery_items(ranked, images, images_dir, names_by_id, masks=masks)
    report.text(f"the {len(items)} images with the most errors (false positives, wrong classes, missed objects) "
                f"at box IoU 0.5 and score >= {score_thresh:g}", "note")
    report.html(legend_html(masks))
    if missing:
        report.text(f"{len(missing)} image file(s) not found in {images_dir} (e.g. {missing[0]}): left out", "warn")
    report.gallery(items)  # thumbnails of THUMBNAIL_SIDE, drawn at that size (gallery_items)
