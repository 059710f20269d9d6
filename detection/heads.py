"""Region heads that torchvision does not ship: the paper's C4 head (res5 run per region) and a
single-level RoI pooler with RoIPool as an option.

torchvision's RoIHeads drives them: it calls ``box_roi_pool(features, proposals, image_shapes)``,
then ``box_head`` and ``box_predictor`` (and the mask trio for Mask R-CNN), so these modules only
have to honour those call signatures.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import roi_pool

from .poolers import roi_align


class SingleLevelRoIPooler(nn.Module):
    """RoIAlign (``aligned=True``, as detectron2's ROIAlignV2) or RoIPool on one feature map.

    torchvision's MultiScaleRoIAlign covers one level too, but has no RoIPool and no half-pixel
    alignment switch; the paper's C4 detector pools res4 with RoIPool, detectron2's with RoIAlignV2.
    """

    def __init__(self, feature: str, output_size: int, stride: int, sampling_ratio: int = 0,
                 kind: str = "align"):
        super().__init__()
        if kind not in ("align", "pool"):
            raise ValueError(f"pooler kind must be 'align' or 'pool', got {kind!r}")
        self.feature = feature
        self.output_size = (output_size, output_size)
        self.spatial_scale = 1.0 / stride
        self.sampling_ratio = sampling_ratio
        self.kind = kind

    def forward(self, features: Dict[str, Tensor], proposals: List[Tensor],
                image_shapes: List[Tuple[int, int]]) -> Tensor:
        x = features[self.feature]
        if self.kind == "pool":
            return roi_pool(x, proposals, self.output_size, self.spatial_scale)
        return roi_align(x, proposals, self.output_size, self.spatial_scale, self.sampling_ratio,
                         aligned=True)

    def extra_repr(self) -> str:
        return (f"feature={self.feature}, output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, kind={self.kind}")


class Res5BoxHead(nn.Module):
    """The paper's per-region head (Appendix A): res5 on the pooled 14x14 res4 features, then
    global average pooling. res5's first block has stride 2, so regions come out 7x7x2048."""

    def __init__(self, res5: nn.Module, out_channels: int):
        super().__init__()
        self.res5 = res5
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean(dim=(2, 3))


class Res5MaskHead(nn.Module):
    """C4 Mask R-CNN: the mask branch runs the *same* res5 as the box head on its own pooled
    regions, and the predictor deconvolves its 7x7 output to 14x14 masks (detectron2's C4 design).

    The res5 module is held without registering it a second time, so its parameters appear once
    in the state dict (under the box head) and DDP sees them once.
    """

    def __init__(self, box_head: Res5BoxHead):
        super().__init__()
        object.__setattr__(self, "_box_head", box_head)

    def forward(self, x: Tensor) -> Tensor:
        return self._box_head.res5(x)
