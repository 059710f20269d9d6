"""COCO-format annotation files and their images: the one place detection and segmentation read them.

What every COCO reader here shares: :func:`load_coco_json` (a pycocotools index with one-line errors),
:func:`category_names` and :func:`contiguous_category_map` (arbitrary category ids to labels 1..K sorted
by id, the convention of torchvision and detectron2), :func:`image_record` (an image entry's file name
and size, checked) and :func:`read_coco_image` / :func:`read_record_image` (OpenCV decoding through
:mod:`engine.image_io`, with messages that name the image id and, for the second, a check of the
decoded size against the json). Masks are :mod:`detection.masks`; the datasets built on these are
:mod:`detection.coco_dataset` (detection targets) and :mod:`segmentation.data` (label maps).

No torch here: ``tools/check_dataset.py`` reads images through this module and starts without it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Dict, Iterable, Optional

import numpy as np
from pycocotools.coco import COCO

from engine import image_io
from engine.data import DataError

__all__ = ["load_coco_json", "category_names", "contiguous_category_map", "image_record", "read_coco_image",
           "read_record_image"]

_REMEDY = "replace the file or remove the image from the dataset (data.skip_bad=true skips and counts such images)"
_MISSING = "check the images directory or the file_name in the annotation json"


def load_coco_json(json_path: str) -> COCO:
    """A pycocotools COCO object for ``json_path``, with one-line errors for files it cannot index."""
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path}: annotation file not found")
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e}); run tools/check_dataset.py on it") from None
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: the top level must be an object with images, annotations, categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: key '{key}' missing or not a list; run tools/check_dataset.py on it")
    data.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise DataError(f"{json_path}: malformed record ({e!r}); run tools/check_dataset.py on it") from None
    return coco


def category_names(coco: COCO) -> Dict[int, str]:
    """{category id: name} of the json (a category without a name is called by its id)."""
    return {c["id"]: c.get("name", str(c["id"])) for c in coco.dataset["categories"]}


def contiguous_category_map(category_ids: Iterable[int]) -> Dict[int, int]:
    """{category id: label}: the ids sorted, labelled 1..K (0 is background)."""
    return {int(cat_id): i + 1 for i, cat_id in enumerate(sorted(category_ids))}


def image_record(info: dict, json_path: str) -> dict:
    """``image_id``, ``file_name``, ``height``, ``width`` of an image entry; DataError when one is missing."""
    image_id = info.get("id")
    try:
        return {"image_id": image_id, "file_name": info["file_name"], "height": int(info["height"]),
                "width": int(info["width"])}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{json_path}: image id {image_id} needs file_name, width and height") from None


def read_coco_image(path: str, image_id: Optional[int] = None) -> np.ndarray:
    """Read ``path`` to an RGB ``uint8`` array [H, W, 3]; a missing or corrupt file raises DataError
    naming the file and the image id."""
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
