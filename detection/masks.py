"""COCO ``segmentation`` fields to binary masks and back, through pycocotools.mask.

A COCO segmentation is one of
- a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (ordinary instances),
- an uncompressed RLE ``{"counts": [int, ...], "size": [h, w]}`` (crowd regions in COCO's own files),
- a compressed RLE ``{"counts": "string" or bytes, "size": [h, w]}`` (results files, some datasets).
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from pycocotools import mask as mask_utils


def valid_polygons(segmentation: Any) -> List[List[float]]:
    """The polygons of a list segmentation that pycocotools can rasterise (≥ 3 points, even length).

    detectron2's ``load_coco_json`` applies the same filter; an instance left with none is "without a
    valid segmentation".
    """
    return [p for p in segmentation if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]


def has_mask(segmentation: Any) -> bool:
    """True when ``segmentation`` describes a region (an RLE, or at least one valid polygon)."""
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    if isinstance(segmentation, list):
        return len(valid_polygons(segmentation)) > 0
    return False


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
    """One compressed RLE for any COCO segmentation (what ``COCO.annToRLE`` does, without a COCO object)."""
    if isinstance(segmentation, list):
        polygons = valid_polygons(segmentation)
        if not polygons:
            raise ValueError("segmentation has no polygon with at least 3 points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):  # uncompressed RLE, e.g. COCO crowd regions
            return mask_utils.frPyObjects(segmentation, height, width)
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return rle
    raise ValueError(f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Binary ``uint8`` mask [height, width] of a COCO segmentation (polygons, RLE, crowd RLE)."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width))


def masks_to_rles(masks: np.ndarray) -> List[dict]:
    """Binary masks [N, H, W] to compressed RLEs whose ``counts`` are ``str`` (JSON-serialisable)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants Fortran order [H, W, N] uint8
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_bbox(mask: np.ndarray) -> Optional[np.ndarray]:
    """Tight xyxy box (pixel edges: x2 = last column + 1) of a binary mask, or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
