"""COCO results records: model outputs to the format ``COCO.loadRes`` reads, and checked loading of
results files.

A record is ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` plus, for instance
masks, ``"segmentation"``: a compressed RLE whose ``counts`` is a str. Boxes and masks are in the
original image's pixels; ``category_id`` is the dataset's own id (labels are mapped back).
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, Iterable, List, Optional

import numpy as np

from engine.data import DataError

from .annotations import _is_number
from .masks import masks_to_rles, segmentation_to_rle

logger = logging.getLogger(__name__)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch is not imported here: eval_coco.py starts without it)
        x = x.detach()
        if x.is_floating_point():  # bf16 / fp16 outputs of autocast inference: NumPy has no bfloat16
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def instances_to_coco_results(image_id: int, boxes, scores, labels, contiguous_to_id: Dict[int, int],
                              masks=None, mask_threshold: float = 0.5) -> List[dict]:
    """Results records of one image.

    ``boxes`` [N, 4] xyxy in original pixels, ``scores`` [N], ``labels`` [N] contiguous (1..K),
    ``masks`` optional [N, H, W] or [N, 1, H, W]: booleans/0-1 integers, or probabilities thresholded at
    ``mask_threshold`` (torchvision's Mask R-CNN returns pasted probabilities).
    """
    boxes = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    scores = _numpy(scores).astype(np.float64).reshape(-1)
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    rles = None
    if masks is not None:
        masks = _numpy(masks)
        if masks.ndim == 4:
            masks = masks[:, 0]
        if masks.dtype.kind == "f":
            masks = masks >= mask_threshold
        if len(masks) != len(boxes):
            raise ValueError(f"image {image_id}: {len(masks)} masks for {len(boxes)} boxes")
        rles = masks_to_rles(masks.astype(np.uint8))
    results = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        if int(label) not in contiguous_to_id:
            raise ValueError(f"image {image_id}: label {int(label)} has no category id "
                             f"(known labels {sorted(contiguous_to_id)})")
        x1, y1, x2, y2 = (float(v) for v in box)
        record = {"image_id": int(image_id), "category_id": int(contiguous_to_id[int(label)]),
                  "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
        if rles is not None:
            record["segmentation"] = rles[i]
        results.append(record)
    return results


def validate_results(results, gt_dataset: dict, iou_type: str, source: str = "results") -> None:
    """Raise DataError (one line naming ``source`` and the record) for results pycocotools would
    reject with an assertion or score silently wrong: not a list, a record without the fields of
    ``iou_type``, an image id absent from the ground truth, an unknown category id."""
    if not isinstance(results, list):
        raise DataError(f"{source}: a results file must be a JSON list of records, got {type(results).__name__}")
    image_ids = {img["id"] for img in gt_dataset.get("images", [])}
    category_ids = {cat["id"] for cat in gt_dataset.get("categories", [])}
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    for i, record in enumerate(results):
        where = f"{source}: record {i}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        for key in ("image_id", "category_id", "score", geometry):
            if key not in record:
                raise DataError(f"{where}: missing '{key}' (a {iou_type} result needs image_id, category_id, "
                                f"{geometry}, score)")
        if record["image_id"] not in image_ids:
            raise DataError(f"{where}: image_id {record['image_id']!r} is not an image of the ground truth")
        if record["category_id"] not in category_ids:
            raise DataError(f"{where}: category_id {record['category_id']!r} is not a category of the ground "
                            f"truth (its ids: {sorted(category_ids)[:20]})")
        if not _is_number(record["score"]):
            raise DataError(f"{where}: score must be a finite number, got {record['score']!r}")
        if geometry == "bbox":
            bbox = record["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise DataError(f"{where}: bbox must be [x, y, w, h] of finite numbers, got {bbox!r}")
        else:
            segm = record["segmentation"]
            if isinstance(segm, list):
                if not segm or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                       and all(_is_number(v) for v in p) for p in segm):
                    raise DataError(f"{where}: segmentation polygons need 3 or more (x, y) pairs of finite numbers")
            elif not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
                raise DataError(f"{where}: segmentation must be an RLE {{counts, size}} or a polygon list")


def polygons_to_rle(results: List[dict], gt_dataset: dict) -> int:
    """Turn polygon segmentations of (validated) results into compressed RLEs in the size of their
    ground-truth image, as ``COCO.loadRes`` needs (it computes areas with ``mask.area``); returns how
    many were converted."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt_dataset.get("images", [])}
    converted = 0
    for record in results:
        segm = record.get("segmentation")
        if isinstance(segm, list):
            rle = segmentation_to_rle(segm, *sizes[record["image_id"]])
            record["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
            converted += 1
    return converted


def load_results_file(path: str, gt_dataset: dict, iou_type: str) -> List[dict]:
    """Read and validate a results JSON file against the ground truth's images and categories."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: results file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    left_out = set(getattr(getattr(gt_dataset, "cleaning", None), "left_out_images", None) or ())
    if left_out and isinstance(results, list):  # images whose every annotation was dropped are not evaluated
        on_left_out = [isinstance(r, dict) and r.get("image_id") in left_out for r in results]
        if any(on_left_out):
            images = {r["image_id"] for r, out in zip(results, on_left_out) if out}
            logger.warning("%s: %d detection(s) on %d image(s) left out of the evaluation (no usable annotation: "
                           "every annotation of theirs was dropped; tools/check_dataset.py names them)", path,
                           sum(on_left_out), len(images))
            results = [r for r, out in zip(results, on_left_out) if not out]
    validate_results(results, gt_dataset, iou_type, source=path)
    if iou_type == "segm":
        converted = polygons_to_rle(results, gt_dataset)
        if converted:
            logger.info("%s: %d polygon segmentation(s) converted to RLE", path, converted)
    if not results:
        logger.warning("%s: the results list is empty (no detections): every AP is 0", path)
    return results


def write_results_file(results: Iterable[dict], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(results), f)


def percent_or_none(value: float) -> Optional[float]:
    """JSON has no NaN: metrics without ground truth (NaN) are written as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
