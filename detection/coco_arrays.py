"""The cleaned records of a COCO json as flat numpy arrays: what :func:`detection.coco.load_coco` caches.

Flat arrays instead of per-record dicts, so that every rank and DataLoader worker of a machine can
share one memory-mapped copy (:mod:`engine.cache`) and reading a record copies nothing (Python
objects in a forked worker are copied page by page as their reference counts change, pytorch#13246).
Variable-length fields are one value array plus offsets, as in CSR matrices.

Arrays (I images sorted by id, A annotations grouped by image in the json's order, P polygons):

- ``image_id`` int64 [I], ``image_width`` / ``image_height`` int64 [I], file names as UTF-8 in
  ``file_name_bytes`` uint8 with ``file_name_offsets`` int64 [I+1];
- ``image_ann_offsets`` int64 [I+1]: image i's annotations are ``[offsets[i], offsets[i+1])``;
- ``ann_id``, ``ann_category`` int64 [A]; ``ann_bbox`` float64 [A, 4] (the json's x, y, w, h);
  ``ann_area`` float64 [A] (cleaning fills a missing area with w*h); ``ann_iscrowd`` uint8 [A];
- ``ann_segm_kind`` uint8 [A]: :data:`SEGM_MISSING` (no ``segmentation`` key), :data:`SEGM_POLYGONS`
  (a list, possibly empty), :data:`SEGM_RLE`;
- polygons: annotation k's are ``ann_poly_offsets[k]:ann_poly_offsets[k+1]`` of the polygon list,
  polygon j's coordinates ``poly_coords[poly_offsets[j]:poly_offsets[j+1]]`` (float64, exact for
  the json's integers and doubles);
- RLEs: compressed COCO strings in ``rle_bytes`` with ``ann_rle_offsets`` int64 [A+1] and their
  ``ann_rle_size`` int64 [A, 2] (h, w). Uncompressed run lengths (COCO's crowd regions) are
  compressed here with pycocotools, once; they decode to the same mask.

No torch here.
"""
from __future__ import annotations

from itertools import chain
from typing import Dict

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["SEGM_MISSING", "SEGM_POLYGONS", "SEGM_RLE", "flatten_coco"]

SEGM_MISSING, SEGM_POLYGONS, SEGM_RLE = 0, 1, 2


def _offsets(lengths) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=out[1:])
    return out


def _concat_bytes(parts) -> np.ndarray:
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy() if parts else np.zeros(0, np.uint8)


def flatten_coco(data: dict) -> Dict[str, np.ndarray]:
    """The arrays of the module docstring from a cleaned COCO dict
    (:func:`detection.annotations.clean_coco`'s ``data``: every record already validated)."""
    images = sorted(data["images"], key=lambda im: im["id"])
    n_img = len(images)
    position = {im["id"]: i for i, im in enumerate(images)}
    names = [im["file_name"].encode("utf-8", "surrogatepass") for im in images]
    arrays = {
        "image_id": np.fromiter((im["id"] for im in images), np.int64, n_img),
        "image_width": np.fromiter((im["width"] for im in images), np.int64, n_img),
        "image_height": np.fromiter((im["height"] for im in images), np.int64, n_img),
        "file_name_bytes": _concat_bytes(names),
        "file_name_offsets": _offsets([len(n) for n in names]),
    }
    anns = data["annotations"]
    n_ann = len(anns)
    image_of = np.fromiter((position[a["image_id"]] for a in anns), np.int64, n_ann)
    order = np.argsort(image_of, kind="stable")  # grouped by image, the json's order within one
    anns = [anns[j] for j in order.tolist()]
    arrays["image_ann_offsets"] = _offsets(np.bincount(image_of, minlength=n_img))
    arrays["ann_id"] = np.fromiter((a["id"] for a in anns), np.int64, n_ann)
    arrays["ann_category"] = np.fromiter((a["category_id"] for a in anns), np.int64, n_ann)
    arrays["ann_bbox"] = np.fromiter(chain.from_iterable(a["bbox"] for a in anns), np.float64, 4 * n_ann).reshape(-1, 4)
    arrays["ann_area"] = np.fromiter((a["area"] for a in anns), np.float64, n_ann)
    arrays["ann_iscrowd"] = np.fromiter((a.get("iscrowd", 0) for a in anns), np.uint8, n_ann)

    kind = np.zeros(n_ann, np.uint8)
    polys_per_ann = np.zeros(n_ann, np.int64)
    polygons, rle_parts = [], []
    rle_lengths = np.zeros(n_ann, np.int64)
    rle_size = np.zeros((n_ann, 2), np.int64)
    sizes = np.stack([arrays["image_height"], arrays["image_width"]], axis=1)[np.sort(image_of)] if n_ann else rle_size
    for k, a in enumerate(anns):
        segm = a.get("segmentation", None)
        if segm is None and "segmentation" not in a:
            continue
        if isinstance(segm, list):
            kind[k] = SEGM_POLYGONS
            polys_per_ann[k] = len(segm)
            polygons.extend(segm)
            continue
        kind[k] = SEGM_RLE
        h, w = int(sizes[k, 0]), int(sizes[k, 1])
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed run lengths: compressed once, same mask
            counts = mask_utils.frPyObjects(segm, h, w)["counts"]
        elif isinstance(counts, str):
            counts = counts.encode("ascii")
        rle_parts.append(counts)
        rle_lengths[k] = len(counts)
        rle_size[k] = segm["size"]
    arrays["ann_segm_kind"] = kind
    arrays["ann_poly_offsets"] = _offsets(polys_per_ann)
    lengths = [len(p) for p in polygons]
    arrays["poly_offsets"] = _offsets(lengths)
    arrays["poly_coords"] = np.fromiter(chain.from_iterable(polygons), np.float64, sum(lengths))
    arrays["ann_rle_offsets"] = _offsets(rle_lengths)
    arrays["rle_bytes"] = _concat_bytes(rle_parts)
    arrays["ann_rle_size"] = rle_size
    return arrays
