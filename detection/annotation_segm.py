"""An annotation's ``segmentation`` checked and repaired: polygons (well formed, numbers, meeting the
image; all of a file's at once with numpy) and RLEs (size of the image, run lengths covering it, a
compressed string decoded as pycocotools does). Part of :func:`detection.annotations.clean_coco`, which
counts what is removed under ``bad_polygon``, ``polygon_outside_image``, ``bad_rle`` and
``empty_segmentation``. No torch here.
"""
from __future__ import annotations

from itertools import chain
from typing import Dict, List, Optional

import numpy as np

from .cleaned_coco import CleanedCoco, _Where
from .json_numbers import _PLAIN_NUMBERS, _all_numbers, _is_int


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
