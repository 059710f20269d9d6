"""COCO evaluation (box and mask AP) with faster-coco-eval or pycocotools.

Both backends run the same protocol and give the same numbers (tests check every number to 1e-10):
faster-coco-eval's ``COCOeval_faster`` is pycocotools' algorithm with the matching and accumulation in
C++. Numbers are reported in percent; a metric without ground truth (e.g. APl when no object is
large) is NaN, as detectron2 reports it (written as null in JSON).

For mask AP the results' ``bbox`` is removed before ``loadRes``: with a bbox present pycocotools
takes the box area as the instance area, which changes the small/medium/large split (detectron2 does
the same).

Every evaluation (training's, ``--eval-only``, ``tools/eval_coco.py --gt G --results R``) gets the
same ground truth, :func:`prepare_ground_truth`: the records :func:`detection.annotations.clean_coco`
keeps (what it dropped is logged with counts), annotation ids renumbered 1..N. The renumbering is
needed because COCOeval marks an unmatched ground truth with id 0 (``gtm``/``dtm`` arrays), so an
annotation whose id is 0 (annotation-tool exports count from 0) can never be matched.

No torch here: ``tools/eval_coco.py --gt G --results R`` starts without it.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from engine.data import DataError
from engine.jsonio import write_json

from .annotations import CleanedCoco, clean_coco
from .coco_results import instances_to_coco_results
from .masks import has_mask, valid_polygons

logger = logging.getLogger(__name__)

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster_coco_eval", "pycocotools")
IOU_TYPES = ("bbox", "segm")


def _silent(*args, **kwargs) -> None:
    pass


def _backend(name: str):
    """(COCO class, COCOeval class, extra COCOeval kwargs) of a backend."""
    if name == "faster_coco_eval":
        # faster-coco-eval imports OpenCV when it can, for its boundary IoU only (faster_coco_eval.core.mask),
        # which no evaluation here asks for: ~17 ms, a tenth of `eval_coco.py --results`'s whole process
        # (benchmarks/eval_startup.py). Hidden for that one import when nothing has loaded it yet; a later
        # `import cv2` (the data pipeline) loads it as usual.
        hide_cv2 = "cv2" not in sys.modules
        if hide_cv2:
            sys.modules["cv2"] = None  # `import cv2` raises ImportError while this entry is None
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        finally:
            if hide_cv2 and sys.modules.get("cv2", "") is None:
                del sys.modules["cv2"]
        return COCO, COCOeval_faster, {"print_function": _silent}
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval, {}
    raise ValueError(f"unknown COCO evaluation backend '{name}' (valid: {', '.join(BACKENDS)})")


def load_gt_dataset(gt) -> dict:
    """The ground-truth json as a dict, from a path, a dict or a COCO object of either backend."""
    if isinstance(gt, (str, os.PathLike)):
        if not os.path.isfile(gt):
            raise DataError(f"{gt}: ground-truth annotation file not found")
        try:
            with open(gt, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{gt}: not valid JSON ({e})") from None
        where = str(gt)
    elif isinstance(gt, dict):
        data, where = gt, "ground truth"
    elif hasattr(gt, "dataset"):
        data, where = gt.dataset, "ground truth"
    else:
        raise TypeError(f"ground truth must be a json path, a dict or a COCO object, got {type(gt).__name__}")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{where}: needs 'images' and 'categories' lists; run tools/check_dataset.py on it")
    return data


class GroundTruth(dict):
    """A ground-truth json ready for COCOeval (:func:`prepare_ground_truth`); ``cleaning`` says what
    was left out of it."""

    cleaning: Optional[CleanedCoco] = None


def prepare_ground_truth(gt, log: bool = True) -> GroundTruth:
    """The ground truth every evaluation uses: ``gt`` (a path, a dict or a COCO object) validated by
    :func:`detection.annotations.clean_coco` (a path is read through :func:`detection.coco.load_coco`, cached; a
    :class:`detection.coco.CocoIndex` brings its cleaning), annotation ids renumbered 1..N (see the module
    docstring). DataError when it has no usable annotation. ``log``: log its summary line (a warning
    when something was dropped). A :class:`GroundTruth` is returned as it is."""
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, (str, os.PathLike)) and os.path.isfile(gt):
        from .coco import load_coco  # the one reading path, cached (detection.coco)
        gt = load_coco(str(gt))
    if hasattr(gt, "ground_truth_dataset"):  # a detection.coco.CocoIndex: cleaned already
        cleaning, data = gt.cleaning, gt.ground_truth_dataset()
    else:
        source = str(gt) if isinstance(gt, (str, os.PathLike)) else "ground truth"
        cleaning = clean_coco(load_gt_dataset(gt), source)
        data = cleaning.data
    cleaning.require_usable()
    prepared = GroundTruth(data)
    prepared["annotations"] = [dict(ann, id=i + 1) for i, ann in enumerate(data["annotations"])]
    prepared.cleaning = cleaning
    if log:
        (logger.warning if cleaning.dropped(annotations_only=False) else logger.info)(
            "ground truth %s", cleaning.summary())
    return prepared


def _coco_from_dataset(coco_cls, dataset: dict):
    coco = coco_cls()
    # Each evaluation gets its own copy: both libraries write into the annotation dicts ('ignore', RLEs),
    # assigning keys, never changing a value in place, so a copy of each dict is enough (a deepcopy
    # was 0.3 s of a 100-image evaluation; benchmarks/eval_startup.py).
    coco.dataset = {k: [dict(x) if isinstance(x, dict) else x for x in v] if isinstance(v, list) else copy.deepcopy(v)
                    for k, v in dataset.items()}
    coco.dataset.setdefault("annotations", [])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _empty_results(coco_cls, gt_dataset: dict):
    """A detections object without detections; pycocotools' ``loadRes([])`` raises instead."""
    return _coco_from_dataset(coco_cls, {"images": gt_dataset["images"], "annotations": [],
                                         "categories": gt_dataset["categories"]})


def _segm_ground_truth(gt_dataset: dict) -> dict:
    """The ground truth for mask AP: instances without a usable segmentation left out.

    An empty ``segmentation`` list (or only polygons of < 3 points) crashes pycocotools
    (``frPyObjects([])``) and gives faster-coco-eval an empty mask that no detection can match. Such
    instances have no mask to learn either (``CocoDetection(with_masks=True)`` drops them, as
    detectron2 does), so mask AP leaves them out; box AP keeps them. Both backends see the same data.
    """
    annotations, dropped = [], 0
    for ann in gt_dataset.get("annotations", []):
        segm = ann.get("segmentation")
        if not has_mask(segm):
            dropped += 1
            continue
        if isinstance(segm, list):
            ann = dict(ann, segmentation=valid_polygons(segm))
        annotations.append(ann)
    if dropped:
        logger.warning("%d ground-truth instance(s) without a segmentation left out of mask AP", dropped)
    return dict(gt_dataset, annotations=annotations)


def _percent(value: float) -> float:
    return float(value) * 100.0 if value >= 0 else float("nan")


def category_names(gt_dataset: dict) -> Dict[int, str]:
    """{category id: display name}; duplicated names get their id appended so that keys stay unique."""
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt_dataset["categories"]}
    counts: Dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {i: (n if counts[n] == 1 else f"{n} ({i})") for i, n in names.items()}


def per_category_ap(precision: np.ndarray, cat_ids: Sequence[int], names: Dict[int, str]) -> Dict[str, float]:
    """AP per category in percent from ``COCOeval.eval['precision']`` [T, R, K, A, M], as detectron2's
    ``_derive_coco_results``: area 'all', the largest maxDets, -1 entries left out, NaN without gt."""
    result = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        result[names[cat_id]] = float(np.mean(p)) * 100.0 if p.size else float("nan")
    return result


def run_cocoeval(gt, results: List[dict], iou_type: str = "bbox", backend: str = "faster_coco_eval",
                 image_ids: Optional[Iterable[int]] = None, category_ids: Optional[Iterable[int]] = None):
    """The COCOeval object after evaluate / accumulate / summarize (arguments as
    :func:`evaluate_results`), and the ground truth it used (for segm: instances without a mask left
    out). Its ``eval["precision"]`` [T, R, K, A, M] is what the report's curves are drawn from."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got '{iou_type}'")
    coco_cls, eval_cls, eval_kwargs = _backend(backend)
    gt_dataset = prepare_ground_truth(gt)
    if iou_type == "segm":
        gt_dataset = _segm_ground_truth(gt_dataset)
    coco_gt = _coco_from_dataset(coco_cls, gt_dataset)
    records = [dict(r) for r in results]  # loadRes assigns ids and areas to keys of the records
    if iou_type == "segm":
        records = [r for r in records if "segmentation" in r]
        for r in records:
            r.pop("bbox", None)
    if records:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(records)
    else:
        logger.warning("no %s detections to evaluate: every %s AP is 0", iou_type, iou_type)
        coco_dt = _empty_results(coco_cls, gt_dataset)
    evaluator = eval_cls(coco_gt, coco_dt, iou_type, **eval_kwargs)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
    if category_ids is not None:
        used = {ann["category_id"] for ann in gt_dataset["annotations"]}
        evaluator.params.catIds = sorted(set(int(c) for c in category_ids) | used)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator, gt_dataset


def evaluate_results(gt, results: List[dict], iou_type: str = "bbox", backend: str = "faster_coco_eval",
                     image_ids: Optional[Iterable[int]] = None,
                     category_ids: Optional[Iterable[int]] = None) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Evaluate COCO results records against ``gt``; returns (12 metrics, per-category AP), percent.

    ``image_ids`` restricts the evaluation to those images (e.g. the part of a validation set that
    was run); by default every ground-truth image counts, with or without detections.
    ``category_ids``: the categories to evaluate (a model's label space); those that ground-truth
    annotations use are added. Default: every category of the json. The mean AP is the same either
    way (a category without ground truth does not count), the per-category table differs: a
    placeholder category that is no class is not listed.
    """
    summary = eval_summary(*run_cocoeval(gt, results, iou_type, backend, image_ids, category_ids))
    return summary["metrics"], summary["per_category"]


def eval_summary(evaluator, gt_dataset: dict) -> dict:
    """What is kept of a COCOeval (:func:`run_cocoeval`) for results.json and the report, without its
    COCO objects: ``metrics`` and ``per_category`` (percent), ``stats``, ``precision``
    [T, R, K, A, M], ``cat_ids``, ``iou_thrs``, ``rec_thrs``."""
    precision = np.asarray(evaluator.eval["precision"])
    return {"metrics": {k: _percent(v) for k, v in zip(METRIC_KEYS, evaluator.stats)},
            "per_category": per_category_ap(precision, evaluator.params.catIds, category_names(gt_dataset)),
            "stats": [float(v) for v in evaluator.stats], "precision": precision,
            "cat_ids": [int(c) for c in evaluator.params.catIds],
            "iou_thrs": np.asarray(evaluator.params.iouThrs, dtype=np.float64),
            "rec_thrs": np.asarray(evaluator.params.recThrs, dtype=np.float64)}


class COCOEvaluator:
    """Collects a model's predictions over a (sharded) dataset, then evaluates them on rank 0.

    ``update({image_id: output})`` takes model outputs with ``boxes`` (xyxy, original image pixels),
    ``scores``, ``labels`` (contiguous 1..K) and, for ``segm``, ``masks`` ([N, H, W] or [N, 1, H, W] in
    original pixels; probabilities are thresholded at 0.5). Every image passed counts as evaluated,
    with or without detections. Under ``torchrun`` each rank updates with its shard;
    ``evaluate()`` gathers the records to rank 0 in chunks (``engine.dist.gather_to_main``), and
    returns the metrics on rank 0 and ``{}`` elsewhere (where ``results()`` is then empty)::

        {"bbox": {AP, AP50, ..., ARl}, "bbox_per_category": {name: AP}, "segm": ..., "segm_per_category": ...}
    """

    def __init__(self, gt, iou_types: Sequence[str] = ("bbox",), backend: str = "faster_coco_eval",
                 contiguous_to_id: Optional[Dict[int, int]] = None):
        for iou_type in iou_types:
            if iou_type not in IOU_TYPES:
                raise ValueError(f"iou_types: '{iou_type}' is not one of {IOU_TYPES}")
        _backend(backend)  # fail now on a bad name, not after a whole inference pass
        self.gt_dataset = prepare_ground_truth(gt)
        self.iou_types = tuple(iou_types)
        self.backend = backend
        if contiguous_to_id is None:  # the default mapping of CocoDetection: sorted ids -> 1..K
            ids = sorted(c["id"] for c in self.gt_dataset["categories"])
            contiguous_to_id = {i + 1: cat_id for i, cat_id in enumerate(ids)}
        self.contiguous_to_id = dict(contiguous_to_id)
        self.reset()

    def reset(self) -> None:
        self._records: List[dict] = []
        self._image_ids: List[int] = []
        self._gathered = False

    def update(self, predictions: Dict[int, dict]) -> None:
        with_masks = "segm" in self.iou_types
        for image_id, output in predictions.items():
            image_id = int(image_id)
            self._image_ids.append(image_id)
            masks = output.get("masks") if with_masks else None
            if with_masks and masks is None:
                raise ValueError(f"image {image_id}: segm evaluation needs 'masks' in the model output")
            self._records.extend(instances_to_coco_results(
                image_id, output["boxes"], output["scores"], output["labels"], self.contiguous_to_id, masks))

    def synchronize(self) -> None:
        """Gather every rank's records and image ids to rank 0 (all ranks must call it).

        ``engine.dist.gather_to_main``: rank 0 receives the other ranks' records in chunks, and the
        other ranks end with none (they do not evaluate), so no rank but 0 ever holds another
        rank's records and rank 0 holds one copy of them (docs/scaling.md)."""
        if self._gathered:
            return
        from engine.dist import gather_to_main  # torch: only where a model ran

        self._records = gather_to_main(self._records)
        self._image_ids = gather_to_main(self._image_ids)
        self._gathered = True

    def results(self) -> List[dict]:
        """COCO results records (bbox xywh, category ids of the dataset) collected so far."""
        return list(self._records)

    def image_ids(self) -> List[int]:
        return sorted(set(self._image_ids))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        from engine.dist import is_main_process

        self.synchronize()
        if not is_main_process():
            return {}
        out: Dict[str, Dict[str, float]] = {}
        self.summaries = {}  # iou type -> eval_summary, for the report
        for iou_type in self.iou_types:
            summary = eval_summary(*run_cocoeval(self.gt_dataset, self._records, iou_type, self.backend,
                                                 image_ids=self.image_ids(),
                                                 category_ids=self.contiguous_to_id.values()))
            self.summaries[iou_type] = summary
            out[iou_type] = summary["metrics"]
            out[f"{iou_type}_per_category"] = summary["per_category"]
        return out


def _fmt(value: Optional[float], missing: str = "  nan") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:5.2f}"


def format_table(results: Dict[str, Dict[str, float]], columns: int = 3) -> str:
    """The 12 numbers of each IoU type and the per-category AP table, as text for the console."""
    lines: List[str] = []
    for iou_type in IOU_TYPES:
        if iou_type not in results:
            continue
        metrics = results[iou_type]
        lines.append(f"{iou_type} AP (percent)")
        lines.append(" | ".join(f"{k:>5s}" for k in METRIC_KEYS))
        lines.append(" | ".join(_fmt(metrics.get(k)) for k in METRIC_KEYS))
        per_category = results.get(f"{iou_type}_per_category", {})
        if per_category:
            width = max(8, max(len(n) for n in per_category))
            items = list(per_category.items())
            lines.append(f"{iou_type} AP per category")
            lines.append("  ".join(f"{'category':<{width}s}    AP" for _ in range(min(columns, len(items)))))
            for start in range(0, len(items), columns):
                row = items[start:start + columns]
                # a category's AP is NaN only without ground truth (it has detections, or a model class)
                lines.append("  ".join(f"{n:<{width}s} {_fmt(v, 'no gt')}" for n, v in row))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_metrics_json(metrics: Dict[str, Dict[str, float]], path: str) -> None:
    """Write metrics (percent) to ``path``, keeping the other IoU types an existing file holds, so
    that bbox and segm evaluations of one run end in one ``results.json``."""
    merged = {}
    if os.path.isfile(path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                merged = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            merged = {}
        if not isinstance(merged, dict):
            merged = {}
    merged.update(metrics)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(path, merged)  # strict JSON: a metric without ground truth is null, never NaN


def default_metrics_path(results_json: str) -> str:
    """Where the metrics of ``results_json`` go without ``output``: ``results.json`` beside it, or
    ``metrics.json`` when the results file is itself called results.json (never over the input)."""
    folder = os.path.dirname(os.path.abspath(results_json))
    path = os.path.join(folder, "results.json")
    return os.path.join(folder, "metrics.json") if os.path.abspath(results_json) == path else path


def evaluate_results_file(gt_json: str, results_json: str, iou_type: str = "bbox",
                          backend: str = "faster_coco_eval",
                          output: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Evaluate a results file against a ground-truth json; write the metrics to ``output``
    (default :func:`default_metrics_path`: ``results.json`` beside the results file, ``metrics.json``
    when that is the results file) and return them.

    Bad input (missing file, not a list, unknown image or category ids) raises DataError naming the
    file and the record.
    """
    from .coco_results import load_results_file

    gt_dataset = prepare_ground_truth(gt_json)
    results = load_results_file(results_json, gt_dataset, iou_type)
    # the categories that ground truth or detections use: a placeholder category of the json that
    # neither uses (Roboflow's supercategory) is no class, and is not listed as NaN
    metrics, per_category = evaluate_results(gt_dataset, results, iou_type, backend,
                                             category_ids={int(r["category_id"]) for r in results})
    out = {iou_type: metrics, f"{iou_type}_per_category": per_category}
    write_metrics_json(out, output or default_metrics_path(results_json))
    return out
