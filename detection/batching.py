"""Batches of detection samples, and padding images into one tensor the way torchvision does.

The order matters: normalise first, then pad with 0. torchvision's ``GeneralizedRCNNTransform``
normalises each image and then ``batch_images`` pads bottom/right with zeros to a multiple of 32, so
the padding is 0 *after* normalisation (the mean colour, not black). Padding raw pixels with 0 and
normalising afterwards would fill the border with ``-mean/std`` instead and change the detections near
it. So ``collate_detection`` keeps images unpadded (a list, as torchvision's detection references do),
and the model normalises them with its backbone weights' mean/std and calls ``pad_images``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

from backbones.norm import normalize_image


def collate_detection(samples: Sequence[Tuple[torch.Tensor, dict]]) -> Tuple[List[torch.Tensor], List[dict]]:
    """DataLoader ``collate_fn``: ``[(image, target), ...]`` -> ``(images list, targets list)``.

    Images keep their own sizes (uint8 [3, H, W] from ``CocoDetection``); the model pads them.
    """
    samples = [s for s in samples if s is not None]  # unreadable images skipped by the dataset
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    return images, targets


def pad_images(images: Sequence[torch.Tensor], size_divisible: int = 32,
               pad_value: float = 0.0) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Stack [C, H, W] images into [B, C, H_max, W_max], padded bottom/right, sizes rounded up to
    ``size_divisible``; returns the batch and each image's (h, w) before padding.

    Same layout and values as torchvision's ``GeneralizedRCNNTransform.batch_images`` (pad 0).
    """
    if len(images) == 0:
        raise ValueError("pad_images needs at least one image")
    image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    channels = images[0].shape[0]
    stride = float(size_divisible) if size_divisible > 0 else 1.0
    max_h = int(math.ceil(max(h for h, _ in image_sizes) / stride) * stride)
    max_w = int(math.ceil(max(w for _, w in image_sizes) / stride) * stride)
    batch = images[0].new_full((len(images), channels, max_h, max_w), pad_value)
    for img, out in zip(images, batch):
        out[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch, image_sizes


def normalize_and_pad(images: Sequence[torch.Tensor], input_norm: Dict,
                      size_divisible: int = 32) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """RGB uint8 (or 0-255 float) images -> normalised for the weights' ``input_norm``
    (``backbones.norm``), then padded with 0: the order torchvision uses.

    For torchvision weights the batch equals ``GeneralizedRCNNTransform``'s bitwise (x / 255, then
    (x - mean) / std, then ``batch_images``).
    """
    if len(images) == 0:
        raise ValueError("normalize_and_pad needs at least one image")
    normalized = [normalize_image(img.to(torch.float32) / 255.0, input_norm) for img in images]
    return pad_images(normalized, size_divisible)
