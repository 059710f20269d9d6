"""The pieces residual networks are built of, as torchvision writes them: the 3x3 / 1x1 convolutions,
:class:`BasicBlock` and :class:`Bottleneck` (residual or plain, the bottleneck's stride in the 1x1 or
the 3x3), the shortcuts of options A / B / C, one stage of blocks (:func:`make_stage`) and torchvision's
initialisation. :mod:`backbones.resnet` assembles them into networks (and re-exports these names).
"""
from __future__ import annotations

from typing import Optional, Type, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .norm import get_norm

__all__ = ["BasicBlock", "Bottleneck", "ZeroPadShortcut", "make_stage", "init_weights", "conv1x1", "conv3x3"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Shortcut option A: identity subsampled by the stride, extra channels zero. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # Same positions a 1x1 stride-s convolution would sample, so shapes match the residual branch.
            x = x[:, :, :: self.stride, :: self.stride]
        pad = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        dilation: int = 1,
        norm: str = "BN",
        residual: bool = True,
        stride_in_1x1: bool = False,  # no 1x1 conv here: accepted so every block takes the same options
    ) -> None:
        super().__init__()
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = get_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = get_norm(norm, planes)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
        out = self.relu(out)

        return out


class Bottleneck(nn.Module):
    # torchvision places the stride of a downsampling block in the 3x3 convolution (conv2), the original
    # MSRA implementation in the first 1x1 (conv1): stride_in_1x1=True. Same parameters, different
    # network: MSRA/Caffe weights need stride_in_1x1=True, torchvision/timm weights the default.
    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        dilation: int = 1,
        norm: str = "BN",
        residual: bool = True,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        width = planes
        self.conv1 = conv1x1(inplanes, width, stride_1x1)
        self.bn1 = get_norm(norm, width)
        self.conv2 = conv3x3(width, width, stride_3x3, dilation)
        self.bn2 = get_norm(norm, width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = get_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
        out = self.relu(out)

        return out


Block = Union[Type[BasicBlock], Type[Bottleneck]]


def _shortcut(kind: str, inplanes: int, outplanes: int, stride: int, norm: str) -> Optional[nn.Module]:
    changes_shape = stride != 1 or inplanes != outplanes
    if kind == "C" or (kind == "B" and changes_shape):
        return nn.Sequential(conv1x1(inplanes, outplanes, stride), get_norm(norm, outplanes))
    if kind == "A" and changes_shape:
        return ZeroPadShortcut(inplanes, outplanes, stride)
    if kind not in ("A", "B", "C"):
        raise ValueError(f"shortcut '{kind}' is not known; choose A, B or C")
    return None


def make_stage(
    block: Block,
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int = 1,
    dilation: int = 1,
    first_dilation: int = 1,
    *,
    plain: bool = False,
    shortcut: str = "B",
    stride_in_1x1: bool = False,
    norm: str = "BN",
) -> nn.Sequential:
    """One stage (``layerN``) of ``blocks`` blocks; the first one carries the stride.

    As torchvision's ``_make_layer``: the first block of a dilated stage keeps the previous stage's
    dilation (``first_dilation``), the others use ``dilation``. Public so a detector's C4 head can
    build ``res5`` exactly as the backbone would.
    """
    layers = []
    for i in range(blocks):
        cin = inplanes if i == 0 else planes * block.expansion
        s = stride if i == 0 else 1
        downsample = None if plain else _shortcut(shortcut, cin, planes * block.expansion, s, norm)
        layers.append(block(cin, planes, s, downsample, first_dilation if i == 0 else dilation, norm,
                            residual=not plain, stride_in_1x1=stride_in_1x1))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's initialisation: Kaiming for convolutions, norms at 1 and 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)

    # Zero-initialize the last norm in each residual branch, so that each block starts as an
    # identity. This improves the model by 0.2~0.3% according to https://arxiv.org/abs/1706.02677
    if zero_init_residual:
        for m in module.modules():
            last_norm = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
            if last_norm is not None:
                nn.init.zeros_(last_norm.weight)
