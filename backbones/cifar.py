"""The CIFAR-10 residual networks of the paper's section 4.2: 6n+2 layers.

A 3x3 convolution of 16 filters, then three stages of n basic blocks on 32x32, 16x16 and 8x8 maps
with 16, 32 and 64 filters, global average pooling and a 10-way fc. Shortcuts are option A
(zero-padded identity) as in the paper, so the residual nets have exactly the plain nets' parameters.
Stages are ``res2``, ``res3``, ``res4`` with strides 1, 2, 4 (``stem`` is the 16-channel map at
stride 1); module names follow :class:`~backbones.resnet.ResNet` (``conv1``, ``layer1``.., ``fc``).
"""
from __future__ import annotations

from torch import nn

from .norm import get_norm
from .resnet import BasicBlock, ResNet

__all__ = ["CifarResNet", "cifar_layers", "CIFAR_DEPTHS", "CIFAR_PLAIN_DEPTHS"]

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)


def cifar_layers(depth: int) -> list:
    """Blocks per stage of the 6n+2-layer network: [n, n, n]."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers (20, 32, 44, 56, 110, 1202, ...), got {depth}")
    return [(depth - 2) // 6] * 3


class CifarResNet(ResNet):
    stage_widths = (16, 32, 64)
    stem_channels = 16
    stem_stride = 1

    def __init__(self, depth: int = 20, num_classes=10, *, shortcut: str = "A", **kwargs) -> None:
        if tuple(kwargs.pop("dilation", (1, 1))) != (1, 1):
            raise ValueError("dilation applies to res4/res5 of ImageNet ResNets, not to CIFAR ResNets")
        self.depth = depth
        super().__init__(BasicBlock, cifar_layers(depth), num_classes, shortcut=shortcut, **kwargs)

    def _build_stem(self, norm: str) -> None:
        self.conv1 = nn.Conv2d(3, self.stem_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = get_norm(norm, self.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # no max-pool on 32x32 inputs; kept so forward is the parent's
