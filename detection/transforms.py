"""Detection augmentation with albumentations: images, xyxy boxes and instance masks move together.

Normalisation is not done here: the model applies its backbone weights' normalisation in one place
(then pads, ``detection.batching.pad_images``). Datasets return the resized image; its ``size`` and
``orig_size`` map predictions back to the original pixels (``boxes_to_original``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np
import torch

from engine.sampler import seed_compose


class ResizeShortestEdge(A.DualTransform):
    """detectron2's ``ResizeShortestEdge`` as an albumentations step.

    The short side becomes a random choice of ``short_edge_length`` unless the long side would then
    exceed ``max_size``, in which case the long side becomes ``max_size``:
    ``scale = min(short / min(h, w), max_size / max(h, w))``, sizes rounded as ``int(x + 0.5)``.
    ``A.SmallestMaxSize`` followed by ``A.LongestMaxSize`` is not the same: the second resize works
    on the rounded output of the first (off by a pixel) and interpolates twice; one step with one scale
    is both exact and cheaper.
    """

    def __init__(self, short_edge_length: Sequence[int] = (800,), max_size: int = 1333,
                 interpolation: int = cv2.INTER_LINEAR, p: float = 1.0):
        super().__init__(p=p)
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        self.short_edge_length = tuple(int(s) for s in short_edge_length)
        self.max_size = int(max_size)
        self.interpolation = interpolation

    def output_size(self, height: int, width: int, short: int) -> Tuple[int, int]:
        scale = short / min(height, width)
        new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
        if self.max_size > 0 and max(new_h, new_w) > self.max_size:
            scale = self.max_size / max(new_h, new_w)
            new_h, new_w = new_h * scale, new_w * scale
        return int(new_h + 0.5), int(new_w + 0.5)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.short_edge_length)
        return {"output_hw": self.output_size(height, width, short)}

    def apply(self, img: np.ndarray, output_hw: Tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return cv2.resize(img, (output_hw[1], output_hw[0]), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, output_hw: Tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        # INTER_NEAREST_EXACT samples pixel centres (as PIL and torchvision do); plain INTER_NEAREST
        # shifts masks by up to half a pixel against the bilinearly resized image.
        return cv2.resize(mask, (output_hw[1], output_hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # albumentations keeps boxes in normalised [0, 1] coordinates: unchanged by a resize

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ("short_edge_length", "max_size", "interpolation")


class DetectionTransform:
    """An albumentations pipeline over ``(image, boxes, labels, masks)``, seeded per sample.

    ``__call__(image, boxes, labels, masks=None, seed=None)`` takes an RGB uint8 image [H, W, 3], xyxy
    boxes [N, 4] in pixels, labels [N] and optional masks [N, H, W]; returns a dict with ``image``,
    ``boxes`` float32 [M, 4], ``labels`` [M], ``masks`` [M, H', W'] (or None) and ``indices`` [M]: which
    input instances survived (boxes pushed out or below ``min_visibility`` are removed, and the masks
    of removed boxes with them). With ``seed`` the outcome depends only on the seed.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], min_visibility: float = 0.0):
        self.pipeline = A.Compose(
            list(transforms),
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "indices"],
                                     min_visibility=min_visibility, clip=True),
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 masks: Optional[np.ndarray] = None, seed: Optional[int] = None) -> dict:
        if seed is not None:
            seed_compose(self.pipeline, seed)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        indices = np.arange(len(boxes))
        inputs = {"image": image, "bboxes": boxes, "labels": np.asarray(labels), "indices": indices}
        has_masks = masks is not None and len(masks) > 0
        if has_masks:  # albumentations stacks masks one by one: an empty stack would fail
            inputs["masks"] = np.asarray(masks)
        out = self.pipeline(**inputs)
        kept = np.asarray(out["indices"], dtype=np.int64).reshape(-1)
        result = {
            "image": out["image"],
            "boxes": np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(out["labels"], dtype=np.int64).reshape(-1),
            "indices": kept,
            "masks": None,
        }
        if masks is not None:
            height, width = out["image"].shape[:2]
            result["masks"] = (np.asarray(out["masks"])[kept] if has_masks
                               else np.zeros((0, height, width), dtype=np.uint8))
        return result


def build_train_transform(min_sizes: Sequence[int] = (640, 672, 704, 736, 768, 800), max_size: int = 1333,
                          flip_prob: float = 0.5, color_jitter: float = 0.0,
                          brightness_contrast: float = 0.0, min_visibility: float = 0.0) -> DetectionTransform:
    """Training: multi-scale shortest-edge resize, horizontal flip, optional photometric changes.

    ``color_jitter`` > 0 applies ``A.ColorJitter`` (brightness, contrast, saturation of that strength,
    hue a quarter of it) with probability 0.8; ``brightness_contrast`` > 0 applies
    ``A.RandomBrightnessContrast`` with those limits with probability 0.5.
    """
    steps = [ResizeShortestEdge(min_sizes, max_size)]
    if flip_prob > 0:
        steps.append(A.HorizontalFlip(p=flip_prob))
    if color_jitter > 0:
        steps.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                   hue=min(0.5, color_jitter / 4), p=0.8))
    if brightness_contrast > 0:
        steps.append(A.RandomBrightnessContrast(brightness_limit=brightness_contrast,
                                                contrast_limit=brightness_contrast, p=0.5))
    return DetectionTransform(steps, min_visibility=min_visibility)


def build_eval_transform(min_size: int = 800, max_size: int = 1333) -> DetectionTransform:
    """Evaluation: the deterministic shortest-edge resize."""
    return DetectionTransform([ResizeShortestEdge((min_size,), max_size)])


def boxes_to_original(boxes: torch.Tensor, size: Sequence[int], orig_size: Sequence[int]) -> torch.Tensor:
    """Map xyxy boxes from the resized image (``size`` = (h, w)) back to the original (``orig_size``).

    Per-axis ratios, as torchvision's ``resize_boxes``: rounding makes the two axes' scales differ slightly.
    """
    ratio_h = float(orig_size[0]) / float(size[0])
    ratio_w = float(orig_size[1]) / float(size[1])
    scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=boxes.dtype, device=boxes.device)
    return boxes * scale
