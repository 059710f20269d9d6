"""Feature Pyramid Network (Lin et al., 2017) on any backbone of this package.

The pyramid itself is torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork`, kept under the
name ``fpn`` with the bottom-up network under ``bottom_up``: a torchvision ``fasterrcnn_resnet50_fpn``
checkpoint maps one to one (``backbone.body.*`` -> ``bottom_up.*``, ``backbone.fpn.*`` -> ``fpn.*``)
and the outputs equal torchvision's ``BackboneWithFPN`` for the same weights. We add the names and
strides of the contract: input ``resK`` becomes ``pK``; the top block adds ``p6`` (max-pool, as
Faster R-CNN) or ``p6``, ``p7`` (RetinaNet's convolutions).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

from torch import Tensor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from .base import Backbone
from .norm import get_norm

__all__ = ["FPN", "FPNOptions", "TOP_BLOCKS"]

# "p6p7" computes P6 from P5 (torchvision's retinanet_resnet50_fpn), "p6p7_c5" from C5 (its _v2, detectron2).
TOP_BLOCKS = (None, "maxpool", "p6p7", "p6p7_c5")


@dataclass(frozen=True)
class FPNOptions:
    """The pyramid's own options (``build_backbone(cfg, fpn=FPNOptions(...))``); the names are FPN's."""
    in_features: Sequence[str] = ("res2", "res3", "res4", "res5")  # what the bottom-up returns
    out_channels: int = 256
    top_block: Optional[str] = "maxpool"  # see TOP_BLOCKS
    norm: Optional[str] = None  # of the pyramid's convolutions (None: no norm, as torchvision)


class FPN(Backbone):
    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
        top_block: Optional[str] = "maxpool",
        norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in bottom_up.out_features]
        if missing:
            raise ValueError(f"FPN in_features {missing} are not outputs of the bottom-up network "
                             f"({bottom_up.out_features}); build it with out_features={list(in_features)}")
        if top_block not in TOP_BLOCKS:
            raise ValueError(f"top_block '{top_block}' is not known; choose one of {TOP_BLOCKS}")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        in_channels = [bottom_up.out_channels[f] for f in self.in_features]
        in_strides = [bottom_up.strides[f] for f in self.in_features]
        extra = {None: None, "maxpool": LastLevelMaxPool(),
                 "p6p7": LastLevelP6P7(out_channels, out_channels),
                 "p6p7_c5": LastLevelP6P7(in_channels[-1], out_channels)}[top_block]
        if top_block == "p6p7_c5" and in_channels[-1] == out_channels:
            raise ValueError("p6p7_c5: torchvision takes P5 when C5 has out_channels channels; use 'p6p7'")
        norm_layer = partial(get_norm, norm) if norm else None
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra, norm_layer=norm_layer)

        strides = list(in_strides)
        for _ in range({None: 0, "maxpool": 1, "p6p7": 2, "p6p7_c5": 2}[top_block]):
            strides.append(strides[-1] * 2)
        self.out_features = [f"p{int(round(math.log2(s)))}" for s in strides]
        if len(set(self.out_features)) != len(self.out_features):
            raise ValueError(f"FPN in_features {self.in_features} have repeated strides {in_strides} "
                             f"(dilated bottom-up?): a pyramid needs one level per stride")
        self.out_channels = {name: out_channels for name in self.out_features}
        self.strides = dict(zip(self.out_features, strides))
        self._size_divisibility = max(in_strides)

    @property
    def input_norm(self) -> dict:
        return self.bottom_up.input_norm

    @input_norm.setter
    def input_norm(self, value: dict) -> None:
        self.bottom_up.input_norm = value

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility  # the max-pooled P6 needs no more than C5's stride

    def freeze(self, at: int = 0) -> "FPN":
        """Freezes the bottom-up stages (the pyramid itself always trains)."""
        self.bottom_up.freeze(at)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.bottom_up(x)
        pyramid = self.fpn(OrderedDict((f, features[f]) for f in self.in_features))
        return dict(zip(self.out_features, pyramid.values()))
