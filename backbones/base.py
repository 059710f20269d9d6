"""The backbone contract of docs/ARCHITECTURE.md, shared by every feature extractor in this package.

A backbone's ``forward(x)`` returns ``dict[str, Tensor]``; ``out_features`` lists those names in
order, ``out_channels`` and ``strides`` describe them, and ``output_shape()`` gives both at once as
detectron2 does. ``input_norm`` states how images must be normalised for the weights it holds.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple

from torch import nn

from .norm import TORCHVISION_INPUT_NORM
from .norm import convert_frozen_batchnorm

__all__ = ["ShapeSpec", "Backbone", "freeze_module"]


class ShapeSpec(NamedTuple):
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: subclasses set ``out_features``, ``out_channels``, ``strides`` in ``__init__``."""

    out_features: List[str]
    out_channels: Dict[str, int]
    strides: Dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        if not isinstance(getattr(type(self), "input_norm", None), property):  # FPN delegates to its bottom-up
            self.input_norm = dict(TORCHVISION_INPUT_NORM)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(self.out_channels[name], self.strides[name]) for name in self.out_features}

    @property
    def size_divisibility(self) -> int:
        """Input sides should be multiples of this for outputs to align (the largest stride)."""
        return max(self.strides.values()) if self.strides else 1


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop gradients to every parameter of ``module`` and turn its batch norms into FrozenBN.

    Returns the module to use in its place (a bare batch norm is replaced by a new module).
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return convert_frozen_batchnorm(module)
