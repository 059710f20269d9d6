"""Where detections go wrong: COCO's ``analyze()`` error breakdown, and a one-to-one matching at one
IoU and score threshold for the confusion matrix and the per-image error counts.

**Error breakdown** (``analyze``, COCO API's ``CocoEval.analyze`` of the Matlab API, which
Detectron's and the COCO challenge's analysis plots come from; chosen over TIDE because it is
COCOeval itself re-run on modified inputs, so every number is an AP COCOeval computes). For each
category, precision-recall at maxDets 100 and every COCO area range, as seven cumulative curves:

1. C75: PR at IoU 0.75; 2. C50: PR at IoU 0.50; 3. Loc: PR at IoU 0.10 (localisation errors
   forgiven, duplicates still false positives);
4. Sim: IoU 0.10, the category's detections only, category-agnostic matching against the ground
   truth of the categories of its supercategory, the other categories' objects flagged ``ignore``
   (a detection on a similar object counts neither way);
5. Oth: as Sim with every other category's objects flagged ``ignore``;
6. BG: 1 where Oth's precision is above 0 (background false positives removed);
7. FN: 1 (every remaining error is a missed object).

Not in the libraries: pycocotools has no Python ``analyze`` (MMDetection's port,
``coco_error_analysis.py``, relabels the other objects as the category instead of ignoring them, so
they count as hits and misses), and both pycocotools and faster-coco-eval overwrite a dataset's
``ignore`` flag with ``iscrowd`` in ``_prepare``. :func:`_with_ignore` restores the flag after
``_prepare`` so that ignored objects behave as the Matlab code's (not crowd: one match each, plain
IoU). tests/detection/test_error_analysis.py checks the result against a reference written from the
Matlab code with pycocotools, and a hand-worked case.

**Matching** (``match_detections``): per image, detections at or above a score threshold, highest
score first, each takes the free ground truth of its own category with the highest IoU >= 0.5
(a true positive), as COCOeval; those left then take the free ground truth of another category
(a confusion); the rest are background false positives, and ground truth nobody took is missed.
A detection on a crowd region is left out, as COCOeval ignores it. Written here because neither
library exposes a confusion matrix over COCO results files (MMDetection's ``confusion_matrix.py``
counts a detection once per overlapping object).
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .evaluation import _backend, _coco_from_dataset

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = ("all", "small", "medium", "large")
_IGNORE_KEY = "_analysis_ignore"


def _with_ignore(eval_cls):
    """``eval_cls`` whose ``_prepare`` keeps ground truth flagged ``_analysis_ignore`` ignored."""

    class WithIgnore(eval_cls):
        def _prepare(self):
            super()._prepare()
            for ann in self.cocoGt.anns.values():  # the dicts _prepare handed to the matcher
                if ann.get(_IGNORE_KEY):
                    ann["ignore"] = 1

    return WithIgnore


def _run(coco_cls, eval_cls, kwargs, gt_dataset: dict, dt_annotations: List[dict], iou_type: str,
         iou_thrs: Sequence[float], use_cats: bool, cat_ids: Optional[Sequence[int]] = None,
         image_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """COCOeval's precision array [T, R, K, A, 1] at maxDets 100. ``dt_annotations``: detections as
    ``loadRes`` made them (ids, areas, boxes), given as a dataset as the Matlab code does
    (``CocoApi(D)``), so that masks are not decoded again for every run."""
    coco_gt = _coco_from_dataset(coco_cls, gt_dataset)
    coco_dt = _coco_from_dataset(coco_cls, {"images": gt_dataset["images"], "categories": gt_dataset["categories"],
                                            "annotations": dt_annotations})
    ev = eval_cls(coco_gt, coco_dt, iou_type, **kwargs)
    ev.params.maxDets = [100]
    ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    ev.params.useCats = int(use_cats)
    if cat_ids is not None:
        ev.params.catIds = list(cat_ids)
    if image_ids is not None:
        ev.params.imgIds = list(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"], dtype=np.float64)


def _loaded(coco_cls, gt_dataset: dict, records: List[dict]) -> List[dict]:
    """The records as ``COCO.loadRes`` completes them (id, area, bbox, iscrowd), once."""
    if not records:
        return []
    if "bbox" not in records[0] and "segmentation" in records[0]:
        # loadRes's branch for masks, with pycocotools' area and toBbox: faster_coco_eval's, called
        # once a record as its loadRes does, took 6x as long (0.036 s against 0.006 for 3,000 masks)
        from pycocotools import mask as mask_utils

        out = []
        for i, r in enumerate(records):
            a = dict(r, area=float(mask_utils.area(r["segmentation"])), id=i + 1, iscrowd=0)
            if "bbox" not in a:
                a["bbox"] = mask_utils.toBbox(r["segmentation"]).tolist()
            out.append(a)
        return out
    coco_gt = _coco_from_dataset(coco_cls, gt_dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        return list(coco_gt.loadRes([dict(r) for r in records]).dataset["annotations"])


def _relabelled(annotations: List[dict], cat_id: int) -> List[dict]:
    """Copies of ``annotations`` as objects of ``cat_id``, those of other categories flagged ignore."""
    return [dict(a, category_id=cat_id, **({_IGNORE_KEY: 1} if a["category_id"] != cat_id else {}))
            for a in annotations]


def _renumbered(annotations: List[dict]) -> List[dict]:
    for i, a in enumerate(annotations):  # the copies are new dicts: ids unique again
        a["id"] = i + 1
    return annotations


def _with_rles(gt_dataset: dict) -> dict:
    """Ground-truth masks as RLEs, converted once instead of in each of the three evaluations (the
    same masks COCOeval's annToRLE makes; areas are the json's, as COCOeval's)."""
    from .masks import segmentation_to_rle

    sizes = {im["id"]: (im["height"], im["width"]) for im in gt_dataset["images"]}
    annotations = []
    for a in gt_dataset["annotations"]:
        h, w = sizes[a["image_id"]]
        annotations.append(dict(a, segmentation=segmentation_to_rle(a["segmentation"], h, w)))
    return dict(gt_dataset, annotations=annotations)


def analyze(gt_dataset: dict, records: List[dict], iou_type: str = "bbox", backend: str = "faster_coco_eval",
            category_ids: Optional[Iterable[int]] = None) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """The error breakdown (module docstring) of ``records`` against a prepared ground truth
    (:func:`detection.evaluation.prepare_ground_truth`; for segm, with unusable masks left out).

    Returns ``(ps, recall_thresholds, category_ids)``: ``ps`` [7, R, K, 4] in ERROR_TYPES order and
    AREAS order, missing values 0 as in the Matlab code; the mean over axis 1 of ``ps[i, :, k, 0]``
    is the category's AP of that kind. ``category_ids`` default: every category of the json (as the
    Matlab code); the mean over categories is taken over these.
    """
    coco_cls, eval_cls, kwargs = _backend(backend)
    if backend == "faster_coco_eval":
        # its mask IoUs one (image, category) pair a thread task: for the report's small pairs the
        # threads' hand-offs cost more CPU than they save (0.13 -> 0.07 s CPU for the demo's segm)
        kwargs = dict(kwargs, rle_iou_max_workers=1)
    eval_cls = _with_ignore(eval_cls)
    cats = {c["id"]: c for c in gt_dataset["categories"]}
    cat_ids = sorted(cats) if category_ids is None else [int(c) for c in category_ids]
    if iou_type == "segm":
        gt_dataset = _with_rles(gt_dataset)
    records = _loaded(coco_cls, gt_dataset, [r for r in records if r["category_id"] in set(cat_ids)])
    first = _run(coco_cls, eval_cls, kwargs, gt_dataset, records, iou_type, (0.75, 0.5, 0.1), True, cat_ids)
    num_rec = first.shape[1]
    ps = np.zeros((7, num_rec, len(cat_ids), len(AREAS)))
    order = sorted(set(cat_ids))  # COCOeval's category axis is sorted
    ps[:3] = first[:, :, :, :, 0][:, :, [order.index(c) for c in cat_ids]]
    if records:
        _similar_and_other(coco_cls, eval_cls, kwargs, gt_dataset, records, iou_type, cats, cat_ids, ps)
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1
    recall = np.linspace(0.0, 1.0, num_rec)
    return ps, recall, cat_ids


def _similar_and_other(coco_cls, eval_cls, kwargs, gt_dataset: dict, records: List[dict], iou_type: str,
                       cats: Dict[int, dict], cat_ids: List[int], ps: np.ndarray) -> None:
    """Sim's and Oth's curves into ``ps[3]`` and ``ps[4]``."""
    annotations = gt_dataset["annotations"]
    supercategory = {c: cats[c].get("supercategory", f"\0{c}") for c in cats}  # none given: its own
    by_image: Dict[int, List[dict]] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    # Sim and Oth of every category in one COCOeval run each, instead of a category-agnostic run per
    # category (the Matlab code's): for category k, a copy of the objects it may be confused with,
    # relabelled k and flagged ignore unless they are k's own, then matched per (image, k) as
    # COCOeval does. Each (image, k) pair sees what the Matlab code's run for k sees there (k's
    # detections against those objects, the others ignored), so the curves are the same
    # (tests/detection/test_error_analysis.py); without a COCOeval's set-up per category, and only the
    # images with a detection or an object of k get copies (elsewhere every object would be ignored
    # and nothing detected).
    oth_gt: List[dict] = []
    sim_gt: List[dict] = []
    sim_from: Dict[int, int] = {}  # Sim's curve taken from Loc's (2) or Oth's (4) run: the same inputs
    for k, cat_id in enumerate(cat_ids):
        images = sorted({r["image_id"] for r in records if r["category_id"] == cat_id}
                        | {a["image_id"] for a in annotations if a["category_id"] == cat_id})
        local = [a for i in images for a in by_image.get(i, [])]
        similar = {c for c in cats if supercategory[c] == supercategory.get(cat_id)} | {cat_id}
        oth_gt += _relabelled(local, cat_id)
        # A class alone in its supercategory makes Sim's evaluation Loc's for that class (as the
        # Matlab code notes for person); a supercategory of every class makes it Oth's.
        if similar == {cat_id}:
            sim_from[k] = 2
        elif similar >= set(cats):
            sim_from[k] = 4
        else:
            sim_gt += _relabelled([a for a in local if a["category_id"] in similar], cat_id)
    order = sorted(set(cat_ids))
    oth = _run(coco_cls, eval_cls, kwargs, dict(gt_dataset, annotations=_renumbered(oth_gt)), records, iou_type,
               (0.1,), True, cat_ids)
    sim_cats = [c for k, c in enumerate(cat_ids) if k not in sim_from]
    sim = _run(coco_cls, eval_cls, kwargs, dict(gt_dataset, annotations=_renumbered(sim_gt)),
               [r for r in records if r["category_id"] in set(sim_cats)], iou_type, (0.1,), True,
               sim_cats) if sim_cats else None
    sim_order = sorted(sim_cats)
    for k, cat_id in enumerate(cat_ids):
        ps[4, :, k] = oth[0, :, order.index(cat_id), :, 0]
        ps[3, :, k] = ps[sim_from[k], :, k] if k in sim_from else sim[0, :, sim_order.index(cat_id), :, 0]


# ---------------------------------------------------------------------------------- the matching


def _ious(dt_boxes: np.ndarray, gt_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not len(dt_boxes) or not len(gt_boxes):
        return np.zeros((len(dt_boxes), len(gt_boxes)))
    return np.asarray(mask_utils.iou(dt_boxes.tolist(), gt_boxes.tolist(), crowd.astype(np.uint8).tolist()))


def match_detections(gt_dataset: dict, records: List[dict], score_thresh: float = 0.5,
                     iou_thresh: float = 0.5, image_ids: Optional[Iterable[int]] = None) -> Dict[int, dict]:
    """The one-to-one matching of the module docstring on boxes, per image::

        {image_id: {"gt": [(annotation, outcome)], "dt": [(record, outcome, matched_gt_category)]}}

    ``outcome`` for a ground truth: "tp", "confused" (taken by a detection of another category) or
    "fn"; for a detection: "tp", "confused" or "fp" (background). Crowd regions are not listed.
    """
    by_image: Dict[int, dict] = {}
    ids = sorted({int(i) for i in image_ids}) if image_ids is not None else \
        sorted(int(img["id"]) for img in gt_dataset["images"])
    for i in ids:
        by_image[i] = {"gt": [], "dt": [], "_gts": [], "_dts": []}
    for ann in gt_dataset["annotations"]:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]]["_gts"].append(ann)
    for r in records:
        if r["image_id"] in by_image and r["score"] >= score_thresh:
            by_image[r["image_id"]]["_dts"].append(r)
    for entry in by_image.values():
        gts, dts = entry.pop("_gts"), sorted(entry.pop("_dts"), key=lambda r: -r["score"])
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
        ious = _ious(np.array([d["bbox"] for d in dts], dtype=np.float64).reshape(-1, 4),
                     np.array([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4), crowd)
        taken = np.zeros(len(gts), dtype=bool)
        gt_outcome = ["fn"] * len(gts)
        dt_outcome: List[Optional[Tuple[str, Optional[int]]]] = [None] * len(dts)
        for same_class in (True, False):
            for d, det in enumerate(dts):
                if dt_outcome[d] is not None:
                    continue
                best, best_iou = -1, iou_thresh
                for g, gt in enumerate(gts):
                    if taken[g] or crowd[g] or (gt["category_id"] == det["category_id"]) != same_class:
                        continue
                    if ious[d, g] >= best_iou:
                        best, best_iou = g, ious[d, g]
                if best >= 0:
                    taken[best] = True
                    kind = "tp" if same_class else "confused"
                    gt_outcome[best] = kind
                    dt_outcome[d] = (kind, gts[best]["category_id"])
        for d, det in enumerate(dts):
            if dt_outcome[d] is None:
                on_crowd = any(crowd[g] and ious[d, g] >= iou_thresh for g in range(len(gts)))
                if on_crowd:  # COCOeval ignores a detection on a crowd region
                    continue
                dt_outcome[d] = ("fp", None)
            entry["dt"].append((det, *dt_outcome[d]))
        entry["gt"] = [(g, o) for g, o, c in zip(gts, gt_outcome, crowd) if not c]
    return by_image


def confusion_matrix(matches: Dict[int, dict], cat_ids: Sequence[int]) -> np.ndarray:
    """[K + 1, K + 1] counts: rows the ground truth's category (last: background, i.e. false
    positives), columns the detection's (last: background, i.e. missed objects)."""
    index = {c: i for i, c in enumerate(cat_ids)}
    k = len(cat_ids)
    cm = np.zeros((k + 1, k + 1), dtype=np.int64)
    for entry in matches.values():
        for det, outcome, gt_cat in entry["dt"]:
            col = index.get(det["category_id"], None)
            if col is None:
                continue
            row = index.get(gt_cat, k) if outcome in ("tp", "confused") else k
            cm[row, col] += 1
        for gt, outcome in entry["gt"]:
            if outcome == "fn" and gt["category_id"] in index:
                cm[index[gt["category_id"]], k] += 1
    return cm


def image_errors(entry: dict) -> int:
    """False positives, confusions and missed objects of one image of :func:`match_detections`."""
    return sum(o != "tp" for _, o, _ in entry["dt"]) + sum(o == "fn" for _, o in entry["gt"])
