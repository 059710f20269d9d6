"""Faster / Mask R-CNN on any reskit backbone, assembled from torchvision's detection components.

torchvision's GeneralizedRCNN, RegionProposalNetwork and RoIHeads do the work (anchors, box coding,
sampling, losses, NMS, mask pasting). What we add: backbones that follow our contract (dict of named
features), the paper's C4 layout next to FPN, and input normalisation taken from the weights' own
format (torchvision RGB 0-1 mean/std, or MSRA/Caffe BGR 0-255 minus mean), applied in one place.

Inputs are RGB images as float tensors in 0-255 (C, H, W), any size. In training the data pipeline
has already resized them (albumentations), so the transform only normalises and pads; in evaluation
the transform resizes exactly as torchvision does (bilinear on the normalised float image), so a
converted torchvision checkpoint reproduces torchvision's detections.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _get_shape_onnx

from backbones.norm import check_input_norm, normalize_image


class RCNNTransform(GeneralizedRCNNTransform):
    """torchvision's transform (resize at test time, pad to a multiple of 32 with 0 after
    normalising), fed 0-255 RGB and normalising for the weights' format.

    Dividing by 255 first is exactly what ``to_tensor`` does, so for torchvision weights the input
    equals a torchvision user's bit for bit.
    """

    def __init__(self, min_size: int, max_size: int, input_norm: dict, size_divisible: int = 32):
        input_norm = check_input_norm(input_norm)
        super().__init__(min_size, max_size, input_norm["mean"], input_norm["std"],
                         size_divisible=size_divisible, _skip_resize=True)
        self.input_norm = input_norm

    def normalize(self, image: Tensor) -> Tensor:
        return normalize_image(image.float().div(255), self.input_norm)

    def resize(self, image: Tensor, target=None):
        if self.training or self.fixed_size is not None or not torchvision._is_tracing():
            return super().resize(image, target)
        # Traced for ONNX (detection/export.py): torchvision resizes by a scale factor with
        # recompute_scale_factor, so torch samples each axis at out/in; exported, ONNX Resize would
        # sample both axes at the scale itself, a fraction of a pixel off wherever in * scale is not a
        # whole number. An explicit output size makes ONNX Runtime sample as torch does. The size is
        # torchvision's, floor(in * min(min_size / short, max_size / long)), in integers: the
        # exporter computes float scales in float32, where torchvision's Python floats are doubles.
        shape = _get_shape_onnx(image)  # int64 [h, w]
        short, long = shape.min(), shape.max()
        a = torch.tensor(int(self.min_size[-1]), dtype=torch.int64)
        b = torch.tensor(int(self.max_size), dtype=torch.int64)
        by_short = a * long <= b * short  # min_size / short <= max_size / long
        size = (shape * torch.where(by_short, a, b)) // torch.where(by_short, short, long)
        image = F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0]
        return image, target


class RCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose backbone returns ``dict[str, Tensor]`` (our contract).

    ``forward(images, targets)`` returns the loss dict in training and, in evaluation, one dict per
    image with ``boxes`` (xyxy in the input image's pixels), ``scores``, ``labels`` (contiguous,
    1..K) and, for Mask R-CNN, ``masks`` (N, 1, H, W probabilities).
    """

    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module,
                 transform: RCNNTransform, arch: str):
        super().__init__(backbone, rpn, roi_heads, transform)
        self.arch = arch

    @property
    def input_norm(self) -> dict:
        return self.transform.input_norm

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None):
        if self.training and targets is None:
            raise ValueError("RCNN in training mode needs targets (boxes, labels[, masks]) per image")
        return super().forward(images, targets)
