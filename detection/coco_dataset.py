"""COCO-format detection datasets: any COCO json plus an image folder (read by :mod:`detection.coco`).

Labels follow torchvision: the dataset's category ids (arbitrary integers, e.g. COCO's 1..90 with
gaps) map to contiguous labels 1..K sorted by id, 0 being background. ``contiguous_to_id`` maps back
when writing results.

What training sees, and what is counted in ``stats`` (annotations are filtered once, at construction):
- every record :func:`detection.annotations.clean_coco` drops or repairs, under its reason
  (``malformed_bbox``, ``duplicate_annotation_id``, ``bad_polygon``, ...); ``coco.cleaning`` holds the
  examples. The same cleaning gives evaluation its ground truth.
- ``unused_categories`` (``drop_unused_categories`` only): categories no annotation uses (an annotation
  tool's placeholder supercategory), left out of the label space.
- ``crowd_ignored``: crowd regions (``iscrowd: 1``) are left out of the targets, as torchvision's
  references and detectron2's mapper do; Faster/Mask R-CNN training has no use for them.
- ``dropped_boxes``: boxes with zero, negative or non-finite size, or lying wholly outside the image
  (the sum of those cleaning reasons).
- ``clipped_boxes``: boxes reaching outside the image, clipped to it (json width/height).
- ``dropped_no_mask`` (``with_masks`` only): instances whose ``segmentation`` is empty or has no polygon
  of 3+ points are dropped from the targets altogether, as detectron2's ``load_coco_json`` does
  ("instances without valid segmentation"); without ``with_masks`` their boxes are kept.
- ``empty_images_dropped``: with ``keep_empty=False``, images left without any target.
- ``skipped_images`` (``skip_bad`` only): unreadable images or images whose decoded size differs from
  the json; ``dataset[i]`` is then ``None`` (``engine.data.SkippingCollate`` and ``collate_detection``
  drop it; the trainer counts them). Counted in the process that read them (each DataLoader worker
  keeps its own count); a warning names each one.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from engine.data import ConcatDataset, DataError, Item, split_item

from .coco import (category_names, contiguous_category_map, image_record, load_coco_json, read_record_image,
                   used_category_ids)
from .masks import has_mask, segmentation_to_mask

__all__ = ["CocoDetection", "ConcatCocoDetection"]


class CocoDetection(torch.utils.data.Dataset):
    """Images and detection targets of a COCO-format json.

    ``dataset[i]`` or ``dataset[(i, sample_seed)]`` returns ``(image, target)``:

    - ``image``: ``uint8`` tensor [3, H, W], RGB, after ``transform`` (resize, flip). It stays uint8
      (4× less to move out of DataLoader workers); the model converts it to float and applies the
      normalisation of its backbone weights, then pads (``detection.batching.pad_images``).
    - ``target``: ``boxes`` float32 [N, 4] xyxy in the returned image's pixels; ``labels`` int64 [N]
      in 1..K; ``image_id`` int (the json's id); ``orig_size`` (h, w) of the file; ``size`` (h, w) of
      the returned image (``detection.transforms.boxes_to_original`` maps boxes back); ``area``
      float32 [N] (the json's area, original pixels, for COCO's size ranges); ``iscrowd`` int64 [N]
      (all 0: crowd regions are not targets); ``masks`` uint8 [N, H, W] when ``with_masks``.

    ``transform`` is a ``detection.transforms.DetectionTransform`` (or any callable with its
    signature); ``sample_seed`` seeds it, so augmentation depends only on the seed.

    ``category_map`` ({category id: label}) imposes a mapping, e.g. the one of another dataset that is
    concatenated with this one or the one a model was trained with. Without one, the labels cover
    every category of the json, or with ``drop_unused_categories`` only those that an annotation uses
    (``unused_categories`` lists the others, {id: name}).

    ``max_dropped_fraction``: stop (DataError) when more of the annotations than this are unusable
    (None: only when none is usable). ``coco``: the json already read by :func:`load_coco_json`.
    """

    def __init__(self, json_path: str, images_dir: str, transform=None, keep_empty: bool = True,
                 with_masks: bool = False, skip_bad: bool = False,
                 category_map: Optional[Dict[int, int]] = None, drop_unused_categories: bool = False,
                 max_dropped_fraction: Optional[float] = None, coco=None):
        self.json_path = json_path
        self.images_dir = images_dir
        self.transform = transform
        self.with_masks = with_masks
        self.skip_bad = skip_bad
        self.coco = coco if coco is not None else load_coco_json(json_path, max_dropped_fraction)
        self.cleaning = self.coco.cleaning

        names = category_names(self.coco)
        self.unused_categories: Dict[int, str] = {}
        if category_map is None:
            used = used_category_ids(self.coco)
            if drop_unused_categories:
                self.unused_categories = {i: n for i, n in names.items() if i not in used}
            category_map = contiguous_category_map(i for i in names if i not in self.unused_categories)
        labels = sorted(category_map.values())
        if labels != list(range(1, len(labels) + 1)):
            raise ValueError(f"category_map labels must be 1..K without gaps, got {labels}")
        self.id_to_contiguous: Dict[int, int] = {int(k): int(v) for k, v in category_map.items()}
        self.contiguous_to_id: Dict[int, int] = {v: k for k, v in self.id_to_contiguous.items()}
        self.class_names: List[str] = [names.get(self.contiguous_to_id[label], f"category {self.contiguous_to_id[label]}")
                                       for label in range(1, len(labels) + 1)]

        self.stats = {"images": 0, "annotations": 0, "crowd_ignored": 0, "dropped_boxes": 0,
                      "clipped_boxes": 0, "dropped_no_mask": 0, "empty_images_dropped": 0,
                      "skipped_images": 0, "unused_categories": len(self.unused_categories)}
        self.stats.update({r: n for r, n in self.cleaning.counts.items() if n})
        self.stats["dropped_boxes"] = sum(self.cleaning.counts[r] for r in
                                          ("malformed_bbox", "empty_bbox", "bbox_outside_image"))
        self.records = []
        for image_id in sorted(self.coco.imgs):
            record = self._parse_image(self.coco.imgs[image_id])
            if len(record["labels"]) == 0 and not keep_empty:
                self.stats["empty_images_dropped"] += 1
                continue
            self.records.append(record)
        self.stats["images"] = len(self.records)

    @property
    def num_categories(self) -> int:
        """K, the number of foreground classes (torchvision's ``num_classes`` is K + 1)."""
        return len(self.class_names)

    def instances_per_class(self) -> Dict[str, int]:
        """{class name: training instances} (crowd regions and dropped boxes not counted)."""
        counts = np.bincount(np.concatenate([r["labels"] for r in self.records] + [np.zeros(0, np.int64)]),
                             minlength=self.num_categories + 1)
        return {name: int(counts[i + 1]) for i, name in enumerate(self.class_names)}

    def _parse_image(self, info: dict) -> dict:
        record = image_record(info, self.json_path)
        image_id, height, width = record["image_id"], record["height"], record["width"]
        boxes, labels, areas, segmentations = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            self.stats["annotations"] += 1
            if ann.get("iscrowd", 0):
                self.stats["crowd_ignored"] += 1
                continue
            cat_id = ann.get("category_id")
            if cat_id not in self.id_to_contiguous:
                raise DataError(f"{self.json_path}: annotation id {ann.get('id')} (image id {image_id}) has "
                                f"category_id {cat_id}, which is not among the categories "
                                f"{sorted(self.id_to_contiguous)}; fix the json or the category map")
            box = self._clip_box(ann.get("bbox"), width, height)
            if box is None:
                continue
            if self.with_masks and not has_mask(ann.get("segmentation")):
                self.stats["dropped_no_mask"] += 1
                continue
            boxes.append(box)
            labels.append(self.id_to_contiguous[cat_id])
            area = ann.get("area")
            areas.append(float(area) if isinstance(area, (int, float)) else (box[2] - box[0]) * (box[3] - box[1]))
            if self.with_masks:
                segmentations.append(ann["segmentation"])
        return {**record, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, dtype=np.int64), "areas": np.asarray(areas, dtype=np.float32),
                "segmentations": segmentations}

    def _clip_box(self, bbox, width: int, height: int) -> Optional[List[float]]:
        """COCO xywh to xyxy clipped to the image; None (counted) for a box that cannot be a target."""
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            self.stats["dropped_boxes"] += 1
            return None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            self.stats["dropped_boxes"] += 1
            return None
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 <= x1 or y2 <= y1:  # wholly outside the image
            self.stats["dropped_boxes"] += 1
            return None
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            self.stats["clipped_boxes"] += 1
        return [x1, y1, x2, y2]

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> List[float]:
        """Width / height of every image, from the json (no decoding)."""
        return [r["width"] / r["height"] for r in self.records]

    def group_ids(self) -> List[int]:
        """Aspect-ratio group of every image for batching: 0 when width ≥ height, else 1 (detectron2)."""
        return [0 if r["width"] >= r["height"] else 1 for r in self.records]

    def image_path(self, index: int) -> str:
        return os.path.join(self.images_dir, self.records[index]["file_name"])

    def read(self, index: int) -> np.ndarray:
        """The RGB uint8 image [H, W, 3] of ``index``, checked against the json's size."""
        return read_record_image(self.images_dir, self.records[index], self.json_path)

    def __getitem__(self, item: Item):
        index, seed = split_item(item)
        try:
            return self._load(index, seed)
        except DataError as e:
            if not self.skip_bad:
                raise
            # engine.data.SkippingCollate drops None samples and the trainer counts them.
            self.stats["skipped_images"] += 1
            warnings.warn(f"skipping: {e}")
            return None

    def _load(self, index: int, seed: Optional[int]):
        record = self.records[index]
        image = self.read(index)
        height, width = record["height"], record["width"]
        masks = None
        if self.with_masks:
            masks = np.zeros((len(record["segmentations"]), height, width), dtype=np.uint8)
            for i, segmentation in enumerate(record["segmentations"]):
                masks[i] = segmentation_to_mask(segmentation, height, width)
        boxes, labels, keep = record["boxes"], record["labels"], np.arange(len(record["labels"]))
        if self.transform is not None:
            out = self.transform(image=image, boxes=boxes, labels=labels, masks=masks, seed=seed)
            image, boxes, labels, masks, keep = (out["image"], out["boxes"], out["labels"],
                                                 out.get("masks"), out["indices"])
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)),
            "image_id": record["image_id"],
            "orig_size": (height, width),
            "size": tuple(image.shape[:2]),
            "area": torch.as_tensor(record["areas"][keep]),
            "iscrowd": torch.zeros(len(keep), dtype=torch.int64),
        }
        if self.with_masks:
            target["masks"] = torch.as_tensor(np.ascontiguousarray(masks, dtype=np.uint8))
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, target


class ConcatCocoDetection(ConcatDataset):
    """Several COCO datasets as one training set, sharing one category mapping.

    Build with ``ConcatCocoDetection.from_files([(json, images_dir), ...], **CocoDetection kwargs)``:
    the first file's mapping is imposed on the others (their annotations must use its category ids).
    With ``drop_unused_categories`` a category is unused when no file's annotation uses it.
    Indexing and ``stats`` are :class:`engine.data.ConcatDataset`'s.
    """

    def __init__(self, datasets: Sequence[CocoDetection]):
        super().__init__(datasets)
        self.contiguous_to_id = self.shared("contiguous_to_id", "build every dataset with the same category_map "
                                                                "(ConcatCocoDetection.from_files does)")
        self.id_to_contiguous = self.datasets[0].id_to_contiguous
        self.class_names = self.datasets[0].class_names

    @classmethod
    def from_files(cls, specs: Sequence[Tuple[str, str]], **kwargs) -> "ConcatCocoDetection":
        datasets, category_map = [], kwargs.pop("category_map", None)
        drop_unused = kwargs.pop("drop_unused_categories", False)
        fraction = kwargs.pop("max_dropped_fraction", None)
        cocos = [load_coco_json(json_path, fraction) for json_path, _ in specs]
        unused: Dict[int, str] = {}
        if category_map is None and drop_unused:
            used = set().union(*(used_category_ids(c) for c in cocos))
            names = category_names(cocos[0])
            unused = {i: n for i, n in names.items() if i not in used}
            category_map = contiguous_category_map(i for i in names if i in used)
        for (json_path, images_dir), coco in zip(specs, cocos):
            ds = CocoDetection(json_path, images_dir, category_map=category_map, coco=coco, **kwargs)
            category_map = ds.id_to_contiguous
            datasets.append(ds)
        datasets[0].unused_categories = unused
        datasets[0].stats["unused_categories"] = len(unused)
        return cls(datasets)

    @property
    def unused_categories(self) -> Dict[int, str]:
        """{id: name} of the categories left out of the label space (no annotation uses them)."""
        return self.datasets[0].unused_categories

    def instances_per_class(self) -> Dict[str, int]:
        total: Dict[str, int] = {}
        for ds in self.datasets:
            for k, v in ds.instances_per_class().items():
                total[k] = total.get(k, 0) + v
        return total

    @property
    def num_categories(self) -> int:
        return len(self.class_names)

    def aspect_ratios(self) -> List[float]:
        return [r for ds in self.datasets for r in ds.aspect_ratios()]

    def group_ids(self) -> List[int]:
        return [g for ds in self.datasets for g in ds.group_ids()]
