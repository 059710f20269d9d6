"""Augmentation for semantic segmentation with albumentations: image and label map move together.

Training follows torchvision's ``SegmentationPresetTrain``: the short side is resized to a random
integer in ``[scale_range[0] * base_size, scale_range[1] * base_size]``, the pair is flipped
horizontally with ``flip_prob``, then a random ``crop_size`` square is cut, padding on the right and
bottom first where the image is smaller (image with 0, labels with ``ignore_index``, as torchvision's
``pad_if_smaller``). Evaluation resizes the short side to ``base_size`` (``SegmentationPresetEval``),
or leaves the image as it is. No normalisation here: the model applies its weights' own.

Label maps are resized with ``cv2.INTER_NEAREST_EXACT``: plain ``INTER_NEAREST`` samples source
pixel ``floor(x * scale)`` and shifts labels by up to half a pixel against the bilinearly resized
image; the exact variant samples pixel centres, as PIL's nearest (torchvision's) does.
Every random draw comes from the per-sample seed, so a sample looks the same in any worker or rank.
"""
from __future__ import annotations

from typing import Optional, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from detection.transforms import ResizeShortestEdge
from engine.sampler import seed_compose

__all__ = ["SegmentationTransform", "ResizeShortSide", "build_train_transform", "build_eval_transform",
           "collate_train", "collate_eval"]


# detection's exact short-side resize (label maps resized with pixel-centre nearest neighbour).
ResizeShortSide = ResizeShortestEdge


class SegmentationTransform:
    """``(image RGB uint8 [H, W, 3], label int32 [H, W], seed) -> (image, label)`` through an
    albumentations pipeline seeded per sample."""

    def __init__(self, transforms: Sequence[A.BasicTransform]):
        self.pipeline = A.Compose(list(transforms))

    def __call__(self, image: np.ndarray, label: np.ndarray, seed: Optional[int] = None):
        if seed is not None:
            seed_compose(self.pipeline, seed)
        out = self.pipeline(image=image, mask=np.asarray(label, dtype=np.int32))
        return out["image"], out["mask"]


def build_train_transform(base_size: int = 520, crop_size: int = 480, scale_range: Sequence[float] = (0.5, 2.0),
                          flip_prob: float = 0.5, ignore_index: int = 255) -> SegmentationTransform:
    low, high = int(scale_range[0] * base_size), int(scale_range[1] * base_size)
    steps = [ResizeShortSide(tuple(range(max(1, low), max(1, high) + 1)), max_size=0)]
    if flip_prob > 0:
        steps.append(A.HorizontalFlip(p=flip_prob))
    steps.append(A.RandomCrop(crop_size, crop_size, pad_if_needed=True, pad_position="top_left",
                              border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index))
    return SegmentationTransform(steps)


def build_eval_transform(base_size: Optional[int] = 520) -> Optional[SegmentationTransform]:
    """Short side to ``base_size``; None or 0: no transform (evaluate at the original size)."""
    if not base_size:
        return None
    return SegmentationTransform([ResizeShortSide((int(base_size),), max_size=0)])


def collate_train(samples: list, ignore_index: int = 255):
    """Stack into (images uint8 [N, 3, H, W], labels int64 [N, H, W]); samples of different sizes
    (no crop) are padded at the right and bottom, images with 0 and labels with ``ignore_index``."""
    height = max(img.shape[1] for img, _ in samples)
    width = max(img.shape[2] for img, _ in samples)
    images = torch.zeros((len(samples), 3, height, width), dtype=samples[0][0].dtype)
    labels = torch.full((len(samples), height, width), ignore_index, dtype=torch.int64)
    for i, (img, lab) in enumerate(samples):
        images[i, :, : img.shape[1], : img.shape[2]] = img
        labels[i, : lab.shape[0], : lab.shape[1]] = lab
    return images, labels


def collate_eval(samples: list):
    """Lists of images and labels as they are: evaluation runs images of one size together and
    never pads (padding would change the predictions near the border)."""
    return [s[0] for s in samples], [s[1] for s in samples]
