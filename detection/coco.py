"""COCO-format annotation files and their images: the one place detection and segmentation read them.

The one path of an annotation file (docs/ARCHITECTURE.md, "COCO annotations"):
:func:`read_json` (orjson, measured 2-3x faster than the standard library on COCO's files) ->
:func:`detection.annotations.clean_coco` (every record validated once, counted by reason) ->
:func:`load_coco` (the kept records as flat numpy arrays, a :class:`CocoIndex`, cached by
:mod:`engine.cache` and memory-mapped by every rank and loader worker of a machine). Training
(:mod:`detection.coco_dataset`), segmentation's label maps (:mod:`segmentation.data`) and evaluation's
ground truth (:func:`detection.evaluation.prepare_ground_truth`) all read a :class:`CocoIndex`;
``tools/check_dataset.py`` runs the same reading and cleaning and names every record.

Also here: :func:`contiguous_category_map` (arbitrary category ids to labels 1..K sorted by id, the
convention of torchvision and detectron2), :func:`read_coco_image` / :func:`read_record_image`
(OpenCV decoding through :mod:`engine.image_io`, with messages that name the image id and, for the
second, a check of the decoded size against the json). Masks are :mod:`detection.masks`.

No torch here: ``tools/check_dataset.py`` and ``tools/eval_coco.py`` start without it.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
from typing import Dict, Iterable, List, Optional

import numpy as np

from engine.cache import CacheEntry, cached_arrays
from engine.data import DataError

from .annotations import CleanedCoco, clean_coco
from .coco_arrays import SEGM_MISSING, SEGM_POLYGONS, SEGM_RLE, flatten_coco

logger = logging.getLogger(__name__)

__all__ = ["read_json", "load_coco", "CocoIndex", "contiguous_category_map", "read_coco_image",
           "read_record_image"]

_REMEDY = "replace the file or remove the image from the dataset (data.skip_bad=true skips and counts such images)"
_MISSING = "check the images directory or the file_name in the annotation json"
# What the cache key holds besides the file: the cleaning options and the code that makes the arrays
# (a digest of the cleaning's files, detection/annotations.py and the modules it is made of, and of
# detection/coco_arrays.py, so that a changed rule rebuilds).
_MAX_EXAMPLES = 5


def _cache_options() -> dict:
    import hashlib

    from . import annotation_segm, annotations, cleaned_coco, coco_arrays, json_numbers
    code = hashlib.blake2b(digest_size=8)
    for module in (annotations, cleaned_coco, json_numbers, annotation_segm, coco_arrays):
        with open(module.__file__, "rb") as f:
            code.update(f.read())
    return {"max_examples": _MAX_EXAMPLES, "code": code.hexdigest()}


def read_json(json_path: str):
    """The parsed json of ``json_path``; DataError (one line) when it is missing or not JSON."""
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path}: annotation file not found")
    with open(json_path, "rb") as f:
        raw = f.read()
    with gc_paused():
        try:
            import orjson
            return orjson.loads(raw)
        except ImportError:
            pass
        except ValueError:  # NaN literals, integers past 64 bits: the standard library reads those (or says why not)
            pass
        try:
            return json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{json_path}: not valid JSON ({e}); run tools/check_dataset.py on it") from None


@contextlib.contextmanager
def gc_paused():
    """Pause Python's garbage collector while the millions of lists and dicts of a COCO file are made
    and walked: none of them can be garbage yet, and its passes over them were 40% of the parse
    and a third of the cleaning."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class CocoIndex:
    """The cleaned records of one COCO json in flat arrays (see :func:`detection.coco_arrays.flatten_coco`
    for each array); built by :func:`load_coco`.

    Images are sorted by id; image ``i``'s annotations are ``ann_*[image_ann_offsets[i]:image_ann_offsets[i+1]]``
    in the json's order. ``categories``: the kept category records (json order); ``cleaning``: what
    was left out and why (:class:`detection.annotations.CleanedCoco`, without ``data``); ``source``:
    where the arrays came from (:meth:`engine.cache.CacheEntry.describe`). Pickles small (a worker
    started with ``spawn`` maps the cache again).
    """

    def __init__(self, json_path: str, entry: CacheEntry):
        self.json_path = json_path
        self.entry = entry
        self.categories: List[dict] = entry.meta["categories"]
        self.cleaning = CleanedCoco.from_meta(entry.meta["cleaning"], json_path)

    def __getattr__(self, name: str):  # the arrays, by name (``index.ann_bbox``)
        arrays = self.__dict__.get("entry")
        if arrays is not None and name in arrays.arrays:
            return arrays.arrays[name]
        raise AttributeError(name)

    @property
    def num_images(self) -> int:
        return len(self.image_id)

    @property
    def num_annotations(self) -> int:
        return len(self.ann_id)

    def describe(self) -> str:
        """The start-of-run line: where the annotations came from and what they cost."""
        return (f"{self.json_path}: {self.entry.describe()}, {self.num_images:,} images, "
                f"{self.num_annotations:,} annotations, {self.entry.describe_size()}")

    def category_names(self) -> Dict[int, str]:
        """{category id: name} (a category without a name is called by its id)."""
        return {c["id"]: c.get("name", str(c["id"])) for c in self.categories}

    def used_category_ids(self) -> set:
        """Category ids that at least one (usable) annotation has, crowd regions included."""
        return set(np.unique(self.ann_category).tolist())

    def file_name(self, i: int) -> str:
        s, e = self.file_name_offsets[i], self.file_name_offsets[i + 1]
        return bytes(self.file_name_bytes[s:e]).decode("utf-8", "surrogatepass")

    def image_record(self, i: int) -> dict:
        """``image_id``, ``file_name``, ``height``, ``width`` of image ``i`` (a fresh dict)."""
        return {"image_id": int(self.image_id[i]), "file_name": self.file_name(i),
                "height": int(self.image_height[i]), "width": int(self.image_width[i])}

    def annotation_range(self, i: int) -> range:
        return range(int(self.image_ann_offsets[i]), int(self.image_ann_offsets[i + 1]))

    def segmentation(self, k: int):
        """Annotation ``k``'s segmentation as COCO writes it: a list of polygons (lists of numbers), an
        RLE ``{"counts": str, "size": [h, w]}`` (uncompressed run lengths were compressed on reading)
        or None when it had none."""
        kind = self.ann_segm_kind[k]
        if kind == SEGM_POLYGONS:
            p0, p1 = self.ann_poly_offsets[k], self.ann_poly_offsets[k + 1]
            bounds = self.poly_offsets[p0:p1 + 1]
            return [self.poly_coords[bounds[j]:bounds[j + 1]].tolist() for j in range(len(bounds) - 1)]
        if kind == SEGM_RLE:
            s, e = self.ann_rle_offsets[k], self.ann_rle_offsets[k + 1]
            return {"counts": bytes(self.rle_bytes[s:e]).decode("ascii"), "size": self.ann_rle_size[k].tolist()}
        return None

    def has_mask(self) -> np.ndarray:
        """bool [A]: the annotation describes a region (an RLE or at least one polygon)."""
        polygons = self.ann_poly_offsets[1:] - self.ann_poly_offsets[:-1]
        return (self.ann_segm_kind == SEGM_RLE) | ((self.ann_segm_kind == SEGM_POLYGONS) & (polygons > 0))

    def annotation_image_index(self) -> np.ndarray:
        """int64 [A]: the image (position in the sorted images) of each annotation."""
        return np.repeat(np.arange(self.num_images), np.diff(self.image_ann_offsets))

    def ground_truth_dataset(self) -> dict:
        """The kept records as a COCO json dict (images sorted by id, each image's annotations in the
        json's order): what COCOeval reads. Built on demand (the arrays turned into Python lists once,
        then sliced); nothing keeps it."""
        names, name_at = bytes(self.file_name_bytes), self.file_name_offsets.tolist()
        ids, widths, heights = self.image_id.tolist(), self.image_width.tolist(), self.image_height.tolist()
        images = [{"id": ids[i], "file_name": names[name_at[i]:name_at[i + 1]].decode("utf-8", "surrogatepass"),
                   "width": widths[i], "height": heights[i]} for i in range(len(ids))]
        image_ids = self.image_id[self.annotation_image_index()].tolist()
        ann_ids, cats = self.ann_id.tolist(), self.ann_category.tolist()
        boxes, areas, crowd = self.ann_bbox.tolist(), self.ann_area.tolist(), self.ann_iscrowd.tolist()
        kinds = self.ann_segm_kind.tolist()
        coords, poly_at, ann_polys = self.poly_coords.tolist(), self.poly_offsets.tolist(), self.ann_poly_offsets.tolist()
        rle, rle_at, rle_size = bytes(self.rle_bytes), self.ann_rle_offsets.tolist(), self.ann_rle_size.tolist()
        annotations = []
        for k in range(len(ann_ids)):
            ann = {"id": ann_ids[k], "image_id": image_ids[k], "category_id": cats[k], "bbox": boxes[k],
                   "area": areas[k], "iscrowd": crowd[k]}
            kind = kinds[k]
            if kind == SEGM_POLYGONS:
                ann["segmentation"] = [coords[poly_at[j]:poly_at[j + 1]] for j in range(ann_polys[k], ann_polys[k + 1])]
            elif kind == SEGM_RLE:
                ann["segmentation"] = {"counts": rle[rle_at[k]:rle_at[k + 1]].decode("ascii"), "size": rle_size[k]}
            annotations.append(ann)
        return {"images": images, "annotations": annotations, "categories": [dict(c) for c in self.categories]}


def load_coco(json_path: str, max_dropped_fraction: Optional[float] = None,
              key: str = "data.max_dropped_fraction", log: bool = False) -> CocoIndex:
    """The usable records of ``json_path`` as a :class:`CocoIndex`: read, cleaned
    (:func:`detection.annotations.clean_coco`) and flattened once, then cached (:mod:`engine.cache`:
    ``$RESKIT_CACHE``, keyed by the file's path, size, mtime and content) and memory-mapped.

    Stops (DataError, one line) when the file has no usable annotation or more than
    ``max_dropped_fraction`` of them were dropped (None: never for the fraction; ``key`` names the
    setting in that message). ``log``: log where the arrays came from (:meth:`CocoIndex.describe`).
    """
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path}: annotation file not found")

    def build():
        with gc_paused():
            cleaning = clean_coco(read_json(json_path), json_path, _MAX_EXAMPLES)
            arrays = flatten_coco(cleaning.data)
        return arrays, {"categories": cleaning.data["categories"], "cleaning": cleaning.to_meta()}

    index = CocoIndex(json_path, cached_arrays("coco", json_path, _cache_options(), build))
    if log:
        logger.info("annotations: %s", index.describe())
    index.cleaning.require_usable(1.0 if max_dropped_fraction is None else max_dropped_fraction, key)
    return index


def contiguous_category_map(category_ids: Iterable[int]) -> Dict[int, int]:
    """{category id: label}: the ids sorted, labelled 1..K (0 is background)."""
    return {int(cat_id): i + 1 for i, cat_id in enumerate(sorted(category_ids))}


def read_coco_image(path: str, image_id: Optional[int] = None) -> np.ndarray:
    """Read ``path`` to an RGB ``uint8`` array [H, W, 3]; a missing or corrupt file raises DataError
    naming the file and the image id."""
    from engine import image_io  # OpenCV loads with the first image: eval_coco.py --results needs none

    where = f"{path} (image id {image_id})" if image_id is not None else path
    return image_io.read_image(path, where, _REMEDY, missing=_MISSING)


def read_record_image(images_dir: str, record: dict, json_path: str) -> np.ndarray:
    """The image of an :func:`image_record` in ``images_dir``, checked against the json's size."""
    path = os.path.join(images_dir, record["file_name"])
    image = read_coco_image(path, record["image_id"])
    if image.shape[:2] != (record["height"], record["width"]):
        raise DataError(f"{path} (image id {record['image_id']}): decoded size {image.shape[1]}x"
                        f"{image.shape[0]} (w x h) differs from the json's {record['width']}x"
                        f"{record['height']} in {json_path}; fix the json or the file")
    return image
