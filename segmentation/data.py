"""Semantic segmentation data: COCO turned into label maps, and image folders with PNG label maps.

Samples are ``(image, label)``: ``image`` uint8 [3, H, W] RGB (the model normalises), ``label``
int64 [H, W] of class indices, ``ignore_index`` (255) where a pixel counts for nothing.

COCO (:class:`CocoSemanticSegmentation`) follows torchvision's references/segmentation/coco_utils.py:

- ``categories="voc"``: only the 20 PASCAL VOC categories are kept (``VOC_COCO_CATEGORY_IDS``, label
  = position in that list, 0 background); ``"all"``: every category of the json, 1..K by id.
- Each kept annotation, crowd regions included (torchvision does not filter ``iscrowd``), is
  rasterised; a pixel takes the largest label among the instances covering it, and a pixel covered by
  more than one instance becomes 255 (``target = (masks * cats).max(0); target[masks.sum(0) > 1] = 255``).
- Training sets drop images whose kept annotations' json ``area`` sum to at most ``min_area`` (1000):
  torchvision's ``_coco_remove_images_without_annotations``. Evaluation sets keep every image.
- Annotations whose segmentation is empty or has no polygon of 3+ points cover no pixel (counted as
  ``no_segmentation``; torchvision would hand them to pycocotools as they are).

Folders (:class:`FolderSegmentation`): ``images/<stem>.<ext>`` paired with ``labels/<stem>.png``.
Label maps are read with PIL, not OpenCV: OpenCV expands palette PNGs (the PASCAL VOC format) into
their colours, while PIL returns the palette indices, which are the labels.

COCO files and their images are read by :mod:`detection.coco` and masks decoded by
:mod:`detection.masks`, as for detection (docs/ARCHITECTURE.md: segmentation builds on detection's
COCO primitives); only the label-map rules above are segmentation's own.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from detection.coco import contiguous_category_map, load_coco, read_record_image
from detection.masks import segmentation_to_mask
from engine import image_io
from engine.data import ConcatDataset, DataError, Item, split_item

__all__ = ["VOC_COCO_CATEGORY_IDS", "VOC_CLASSES", "CocoSemanticSegmentation", "FolderSegmentation",
           "ConcatSegmentation", "read_label_map", "coco_label_map", "IMAGE_EXTENSIONS"]

# torchvision references/segmentation/coco_utils.py CAT_LIST: COCO ids of the VOC classes, label = index.
VOC_COCO_CATEGORY_IDS = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]
VOC_CLASSES = ["__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_REMEDY = "replace the file or remove the image from the dataset (data.skip_bad=true skips and counts such images)"


def coco_label_map(segmentations: Sequence, labels: Sequence[int], height: int, width: int,
                   ignore_index: int = 255) -> np.ndarray:
    """torchvision's ``ConvertCocoPolysToMask``: instances painted with their label (the largest
    where several cover a pixel), overlaps set to ``ignore_index``; int32 [height, width]."""
    target = np.zeros((height, width), np.int32)
    covered = np.zeros((height, width), np.int32)
    for segmentation, label in zip(segmentations, labels):
        mask = segmentation_to_mask(segmentation, height, width).astype(np.int32)
        np.maximum(target, mask * int(label), out=target)
        covered += mask
    target[covered > 1] = ignore_index
    return target


def read_label_map(path: str) -> np.ndarray:
    """A label map PNG as class indices [H, W] (palette indices for palette PNGs); DataError if it is
    missing, unreadable or holds colours rather than indices."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "LA", "YCbCr"):
                raise DataError(f"{path}: label map of mode {mode} holds colours; save class indices as a "
                                "single-channel (grayscale or palette) PNG")
            array = np.array(im)
    except FileNotFoundError:
        raise DataError(f"{path}: label map not found") from None
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable label map ({e}); replace the file") from None
    if array.ndim != 2:
        raise DataError(f"{path}: label map has shape {array.shape}; expected one channel")
    return array.astype(np.int32)  # what cv2 resizes and pads (the transforms), whatever the PNG depth


class _SegmentationBase(torch.utils.data.Dataset):
    """What both dataset kinds share: reading a pair, checking the labels, transforming, skipping."""

    num_classes: int
    class_names: List[str]

    def __init__(self, transform=None, ignore_index: int = 255, skip_bad: bool = False):
        self.transform = transform
        self.ignore_index = ignore_index
        self.skip_bad = skip_bad
        self.skipped = 0

    def __getitem__(self, item: Item):
        index, seed = split_item(item)
        try:
            image, label, where = self.read_pair(index)
            if image.shape[:2] != label.shape:
                raise DataError(f"{where}: image is {image.shape[1]}x{image.shape[0]} (w x h) but its label map "
                                f"{label.shape[1]}x{label.shape[0]}; they must match")
            bad = ((label < 0) | (label >= self.num_classes)) & (label != self.ignore_index)
            if bad.any():
                raise DataError(f"{where}: label values {sorted(set(np.unique(label[bad]).tolist()))[:8]} are not "
                                f"classes 0..{self.num_classes - 1} nor ignore_index {self.ignore_index}; "
                                "fix the labels or model.num_classes")
        except DataError as e:
            if not self.skip_bad:
                raise
            self.skipped += 1  # engine.data.SkippingCollate drops None samples; the trainer counts them
            warnings.warn(f"skipping: {e}")
            return None
        if self.transform is not None:
            image, label = self.transform(image, label, seed=seed)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))

    def read_pair(self, index: int) -> Tuple[np.ndarray, np.ndarray, str]:
        """(RGB uint8 [H, W, 3], labels int32 [H, W], a description naming the files)."""
        raise NotImplementedError


class CocoSemanticSegmentation(_SegmentationBase):
    """A COCO json + image folder as label maps (module docstring for the rules).

    ``min_area``: drop images whose kept annotations' areas sum to at most this (torchvision: 1000,
    training only); None keeps every image. ``category_map`` ({category id: label}) imposes a label
    space (to concatenate datasets); by default it follows ``categories``.
    """

    def __init__(self, json_path: str, images_dir: str, categories: str = "voc", transform=None,
                 min_area: Optional[float] = None, ignore_index: int = 255, skip_bad: bool = False,
                 category_map: Optional[Dict[int, int]] = None):
        super().__init__(transform, ignore_index, skip_bad)
        self.json_path, self.images_dir = json_path, images_dir
        self.index = index = load_coco(json_path, log=True)
        names = index.category_names()
        if category_map is None:
            if categories == "voc":
                category_map = {cid: i for i, cid in enumerate(VOC_COCO_CATEGORY_IDS) if i > 0}
            elif categories == "all":
                category_map = contiguous_category_map(names)
            else:
                raise ValueError(f"categories '{categories}': choose voc or all")
        elif categories == "all" and set(names) - set(category_map):
            # with every category a class, an unknown one would silently become background
            raise DataError(f"{json_path}: category ids {sorted(set(names) - set(category_map))[:8]} are not in "
                            f"the label space of the first dataset ({sorted(category_map)[:8]}...); give every "
                            "dataset the same categories")
        self.category_map = {int(k): int(v) for k, v in category_map.items()}
        self.num_classes = max(self.category_map.values()) + 1
        if self.category_map == {cid: i for i, cid in enumerate(VOC_COCO_CATEGORY_IDS) if i > 0}:
            self.class_names = list(VOC_CLASSES)
        else:
            by_label = {v: names.get(k, f"category {k}") for k, v in self.category_map.items()}
            self.class_names = ["background"] + [by_label.get(i, f"class {i}") for i in range(1, self.num_classes)]
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class label of {json_path}")

        self.stats = {"images": 0, "annotations": 0, "crowd": 0, "no_segmentation": 0, "small_images_dropped": 0}
        self.stats.update({r: n for r, n in index.cleaning.counts.items() if n})
        # Per annotation of the index (flat arrays, shared through the cache): its label, 0 where it
        # paints nothing (another category, or no segmentation).
        in_map = np.isin(index.ann_category, np.fromiter(self.category_map, np.int64, len(self.category_map)))
        image_of = index.annotation_image_index()
        if min_area is not None:  # torchvision: the kept annotations' areas, crowd regions included
            area = np.bincount(image_of[in_map], weights=index.ann_area[in_map], minlength=index.num_images)
            count = np.bincount(image_of[in_map], minlength=index.num_images)
            self._images = np.flatnonzero((count > 0) & (area > min_area))
        else:
            self._images = np.arange(index.num_images)
        kept_image = np.zeros(index.num_images, bool)
        kept_image[self._images] = True
        counted = in_map & kept_image[image_of]
        paints = counted & index.has_mask()
        self._label = np.zeros(index.num_annotations, np.int64)
        self._label[paints] = [self.category_map[c] for c in index.ann_category[paints].tolist()]
        self.stats["small_images_dropped"] = index.num_images - len(self._images)
        self.stats["annotations"] = int(counted.sum())
        self.stats["crowd"] = int((counted & (index.ann_iscrowd != 0)).sum())
        self.stats["no_segmentation"] = int((counted & ~paints).sum())
        self.stats["images"] = len(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def instances_per_label(self) -> Dict[int, int]:
        """{label: annotated instances that paint it} over the kept images (crowd regions included)."""
        counts = np.bincount(self._label, minlength=self.num_classes)
        return {label: int(n) for label, n in enumerate(counts.tolist()) if label and n}

    def image_ids(self) -> List[int]:
        """The json's id of every image of the dataset, in dataset order."""
        return self.index.image_id[self._images].tolist()

    def _record(self, index: int) -> dict:
        i = int(self._images[index])
        record = self.index.image_record(i)
        keep = [k for k in self.index.annotation_range(i) if self._label[k]]
        record["segmentations"] = [self.index.segmentation(k) for k in keep]
        record["labels"] = self._label[keep].tolist()
        return record

    def label_map(self, index: int) -> np.ndarray:
        r = self._record(index)
        try:
            return coco_label_map(r["segmentations"], r["labels"], r["height"], r["width"], self.ignore_index)
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(f"{self.json_path}: image id {r['image_id']} has a malformed segmentation ({e}); "
                            "run tools/check_dataset.py on it") from None

    def read_pair(self, index: int):
        r = self.index.image_record(int(self._images[index]))
        image = read_record_image(self.images_dir, r, self.json_path)
        return image, self.label_map(index), f"{os.path.join(self.images_dir, r['file_name'])} (image id {r['image_id']})"


class FolderSegmentation(_SegmentationBase):
    """``images_dir/<stem>.<ext>`` with ``labels_dir/<stem>.png`` (pairs sorted by stem).

    An image without a label map stops the construction with a DataError naming it; label maps
    without an image are ignored. ``class_names`` name labels 0..num_classes-1.
    """

    def __init__(self, images_dir: str, labels_dir: str, num_classes: int, class_names: Optional[Sequence[str]] = None,
                 transform=None, ignore_index: int = 255, skip_bad: bool = False):
        super().__init__(transform, ignore_index, skip_bad)
        for d, what in ((images_dir, "images"), (labels_dir, "labels")):
            if not os.path.isdir(d):
                raise DataError(f"{d}: {what} folder not found")
        self.images_dir, self.labels_dir = images_dir, labels_dir
        self.num_classes = int(num_classes)
        names = list(class_names or [])
        if names and len(names) != self.num_classes:
            raise ValueError(f"data.class_names has {len(names)} names for model.num_classes={num_classes}")
        self.class_names = names or [f"class {i}" for i in range(self.num_classes)]
        files = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
        self.pairs: List[Tuple[str, str]] = []
        missing: List[str] = []
        for f in files:
            label = os.path.join(labels_dir, os.path.splitext(f)[0] + ".png")
            if os.path.isfile(label):
                self.pairs.append((os.path.join(images_dir, f), label))
            else:
                missing.append(f)
        if missing:
            raise DataError(f"{images_dir}: {len(missing)} images have no label map in {labels_dir} (e.g. "
                            f"{missing[0]} needs {os.path.splitext(missing[0])[0]}.png); add them or remove the images")
        if not self.pairs:
            raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
        self.stats = {"images": len(self.pairs)}

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int):
        image_path, label_path = self.pairs[index]
        image = image_io.read_image(image_path, remedy=_REMEDY, missing="was it moved after the folder was scanned?")
        return image, read_label_map(label_path), f"{image_path} / {label_path}"


class ConcatSegmentation(ConcatDataset):
    """Several datasets with one label space; indexing and ``stats`` are :class:`engine.data.ConcatDataset`'s."""

    def __init__(self, datasets: Sequence[_SegmentationBase]):
        super().__init__(datasets)
        self.num_classes = self.shared("num_classes", "give every dataset the same label space")
        self.class_names = self.datasets[0].class_names
