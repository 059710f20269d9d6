"""COCO-format detection datasets: any COCO json plus an image folder (read by :mod:`detection.coco`).

The annotations are a :class:`detection.coco.CocoIndex`: flat arrays memory-mapped from the cache,
shared by every rank and loader worker of a machine. The dataset keeps only a few arrays of its own
(a label per annotation, the kept images) and builds each sample's target when it is read.

Labels follow torchvision: the dataset's category ids (arbitrary integers, e.g. COCO's 1..90 with
gaps) map to contiguous labels 1..K sorted by id, 0 being background. ``contiguous_to_id`` maps back
when writing results.

What training sees, and what is counted in ``stats`` (annotations are filtered once, at construction):
- every record :func:`detection.annotations.clean_coco` drops or repairs, under its reason
  (``malformed_bbox``, ``duplicate_annotation_id``, ``bad_polygon``, ...; ``no_usable_annotation``:
  images whose every annotation was dropped, left out, not trained as background);
  ``index.cleaning`` holds the examples. The same cleaning gives evaluation its ground truth.
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

import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from engine.data import ConcatDataset, DataError, Item, split_item

from .coco import CocoIndex, contiguous_category_map, load_coco, read_record_image
from .masks import segmentation_to_mask

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
    (None: only when none is usable). ``index``: the json already read by :func:`detection.coco.load_coco`.
    """

    def __init__(self, json_path: str, images_dir: str, transform=None, keep_empty: bool = True,
                 with_masks: bool = False, skip_bad: bool = False,
                 category_map: Optional[Dict[int, int]] = None, drop_unused_categories: bool = False,
                 max_dropped_fraction: Optional[float] = None, index: Optional[CocoIndex] = None):
        self.json_path = json_path
        self.images_dir = images_dir
        self.transform = transform
        self.with_masks = with_masks
        self.skip_bad = skip_bad
        self.index = index if index is not None else load_coco(json_path, max_dropped_fraction)
        self.cleaning = self.index.cleaning

        names = self.index.category_names()
        self.unused_categories: Dict[int, str] = {}
        if category_map is None:
            used = self.index.used_category_ids()
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
        self._label = self._target_labels()  # int64 [A]: the label of each annotation, 0 = not a target
        per_image = np.bincount(self.index.annotation_image_index()[self._label > 0], minlength=self.index.num_images)
        self._images = np.arange(self.index.num_images) if keep_empty else np.flatnonzero(per_image)
        self.stats["empty_images_dropped"] = self.index.num_images - len(self._images)
        self.stats["images"] = len(self._images)

    def _target_labels(self) -> np.ndarray:
        """The label of every annotation of the index, 0 where it is no target (crowd, no mask);
        counts what it leaves out. Boxes were validated by the cleaning; clipping is counted here."""
        ix = self.index
        self.stats["annotations"] = ix.num_annotations
        crowd = ix.ann_iscrowd != 0
        self.stats["crowd_ignored"] = int(crowd.sum())
        categories = ix.ann_category
        known = np.isin(categories, np.fromiter(self.id_to_contiguous, np.int64, len(self.id_to_contiguous)))
        bad = np.flatnonzero(~crowd & ~known)
        if len(bad):
            k = int(bad[0])
            image_id = int(ix.image_id[np.searchsorted(ix.image_ann_offsets, k, side="right") - 1])
            raise DataError(f"{self.json_path}: annotation id {int(ix.ann_id[k])} (image id {image_id}) has "
                            f"category_id {int(categories[k])}, which is not among the categories "
                            f"{sorted(self.id_to_contiguous)}; fix the json or the category map")
        target = ~crowd
        label = np.zeros(ix.num_annotations, np.int64)
        label[target] = [self.id_to_contiguous[c] for c in categories[target].tolist()]
        image_of = ix.annotation_image_index()
        clipped = self._clip(ix.ann_bbox, ix.image_width[image_of], ix.image_height[image_of]) != \
            np.concatenate([ix.ann_bbox[:, :2], ix.ann_bbox[:, :2] + ix.ann_bbox[:, 2:]], axis=1)
        self.stats["clipped_boxes"] = int((clipped.any(axis=1) & target).sum())
        if self.with_masks:
            no_mask = target & ~ix.has_mask()
            self.stats["dropped_no_mask"] = int(no_mask.sum())
            label[no_mask] = 0
        return label

    @staticmethod
    def _clip(bbox: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """COCO xywh [N, 4] (float64) to xyxy clipped to the image (float64); the cleaning already
        dropped every box that clipping would leave empty."""
        x, y = bbox[:, 0], bbox[:, 1]
        x2, y2 = x + bbox[:, 2], y + bbox[:, 3]
        return np.stack([np.minimum(np.maximum(x, 0.0), width), np.minimum(np.maximum(y, 0.0), height),
                         np.minimum(np.maximum(x2, 0.0), width), np.minimum(np.maximum(y2, 0.0), height)], axis=1)

    @property
    def num_categories(self) -> int:
        """K, the number of foreground classes (torchvision's ``num_classes`` is K + 1)."""
        return len(self.class_names)

    def instances_per_class(self) -> Dict[str, int]:
        """{class name: training instances} (crowd regions and dropped boxes not counted)."""
        counts = np.bincount(self._label, minlength=self.num_categories + 1)
        return {name: int(counts[i + 1]) for i, name in enumerate(self.class_names)}

    def image_ids(self) -> List[int]:
        """The json's id of every image of the dataset, in dataset order."""
        return self.index.image_id[self._images].tolist()

    def record(self, index: int) -> dict:
        """``image_id``, ``file_name``, ``height``, ``width`` of item ``index``."""
        return self.index.image_record(int(self._images[index]))

    def targets(self, index: int) -> dict:
        """The untransformed targets of item ``index`` (numpy): ``boxes`` float32 [N, 4] xyxy clipped to
        the image, ``labels`` int64 [N], ``areas`` float32 [N], ``segmentations`` (with masks: list)."""
        ix, i = self.index, int(self._images[index])
        start, end = ix.image_ann_offsets[i], ix.image_ann_offsets[i + 1]
        keep = np.flatnonzero(self._label[start:end]) + start
        boxes = self._clip(ix.ann_bbox[keep], ix.image_width[i], ix.image_height[i])
        out = {"boxes": boxes.astype(np.float32).reshape(-1, 4), "labels": self._label[keep],
               "areas": ix.ann_area[keep].astype(np.float32)}
        if self.with_masks:
            out["segmentations"] = [ix.segmentation(int(k)) for k in keep]
        return out

    def __len__(self) -> int:
        return len(self._images)

    def aspect_ratios(self) -> List[float]:
        """Width / height of every image, from the json (no decoding)."""
        return (self.index.image_width[self._images] / self.index.image_height[self._images]).tolist()

    def group_ids(self) -> List[int]:
        """Aspect-ratio group of every image for batching: 0 when width ≥ height, else 1 (detectron2)."""
        return np.where(self.index.image_width[self._images] >= self.index.image_height[self._images], 0, 1).tolist()

    def image_path(self, index: int) -> str:
        return os.path.join(self.images_dir, self.record(index)["file_name"])

    def read(self, index: int) -> np.ndarray:
        """The RGB uint8 image [H, W, 3] of ``index``, checked against the json's size."""
        return read_record_image(self.images_dir, self.record(index), self.json_path)

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
        record = self.record(index)
        image = read_record_image(self.images_dir, record, self.json_path)
        record.update(self.targets(index))
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
        indexes = [load_coco(json_path, fraction, log=True) for json_path, _ in specs]
        unused: Dict[int, str] = {}
        if category_map is None and drop_unused:
            used = set().union(*(ix.used_category_ids() for ix in indexes))
            names = indexes[0].category_names()
            unused = {i: n for i, n in names.items() if i not in used}
            category_map = contiguous_category_map(i for i in names if i in used)
        for (json_path, images_dir), index in zip(specs, indexes):
            ds = CocoDetection(json_path, images_dir, category_map=category_map, index=index, **kwargs)
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
