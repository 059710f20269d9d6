"""COCO-format annotation files and their images: the one place detection and segmentation read them.

What every COCO reader here shares: :func:`load_coco_json` (a pycocotools index of the records that
:func:`detection.annotations.clean_coco` keeps, with one-line errors),
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

from .annotations import clean_coco

__all__ = ["read_json", "load_coco_json", "category_names", "used_category_ids", "contiguous_category_map", "image_record", "read_coco_image",
           "read_record_image"]

_REMEDY = "replace the file or remove the image from the dataset (data.skip_bad=true skips and counts such images)"
_MISSING = "check the images directory or the file_name in the annotation json"


def read_json(json_path: str):
    """The parsed json of ``json_path``; DataError (one line) when it is missing or not JSON."""
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path}: annotation file not found")
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e}); run tools/check_dataset.py on it") from None


def load_coco_json(json_path: str, max_dropped_fraction: Optional[float] = None,
                   key: str = "data.max_dropped_fraction") -> COCO:
    """A pycocotools COCO object of the usable records of ``json_path``
    (:func:`detection.annotations.clean_coco`); ``coco.cleaning`` says what was left out and why.

    Stops (DataError, one line) when the file has no usable annotation or more than
    ``max_dropped_fraction`` of them were dropped (None: never for the fraction; ``key`` names the
    setting in that message).
    """
    cleaning = clean_coco(read_json(json_path), json_path)
    cleaning.require_usable(1.0 if max_dropped_fraction is None else max_dropped_fraction, key)
    coco = COCO()
    coco.dataset = cleaning.data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    coco.cleaning = cleaning
    return coco


def category_names(coco: COCO) -> Dict[int, str]:
    """{category id: name} of the json (a category without a name is called by its id)."""
    return {c["id"]: c.get("name", str(c["id"])) for c in coco.dataset["categories"]}


def used_category_ids(coco: COCO) -> set:
    """Category ids that at least one (usable) annotation has, crowd regions included."""
    return {ann["category_id"] for ann in coco.dataset["annotations"]}


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
