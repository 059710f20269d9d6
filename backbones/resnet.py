"""Residual networks of "Deep Residual Learning for Image Recognition" (He et al., 2015), as torchvision
writes them, with the options detection needs.

One :class:`ResNet` serves two modes. With ``num_classes`` it is the classifier (global average
pooling and ``fc``; ``forward`` returns logits). With ``num_classes=None`` it is a backbone:
``forward`` returns the feature maps named in ``out_features`` (``stem`` after the max-pool, and the
paper's stages ``res2``..``res5``), and stages after the last requested one are not built (as in
detectron2; an unused stage would also trip DistributedDataParallel's unused-parameter check).

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``) so torchvision and timm state dicts load as they are. Stage ``resK`` is ``layer{K-1}``.

Options beyond torchvision:
  * ``plain=True``: no shortcuts at all (the paper's plain nets of the degradation study);
  * ``shortcut``: "A" zero-padded identity (parameter-free), "B" projections only where the shape
    changes (default, torchvision's), "C" projections on every block (paper Table 3);
  * ``stride_in_1x1``: the MSRA placement of the bottleneck stride (in the first 1x1 conv) instead of
    torchvision's (in the 3x3, "ResNet v1.5");
  * ``norm``: BN, SyncBN, FrozenBN or GN; ``freeze_at`` as detectron2 (0 none, 1 stem, 2 stem+res2, ...);
  * ``dilation=(d4, d5)``: dilated res4/res5 instead of strided (torchvision's
    ``replace_stride_with_dilation``: (1, 2) gives output stride 16, (2, 4) gives 8).

The blocks, the shortcuts and one stage of blocks live in :mod:`backbones.blocks` (importable from
here too); this file assembles them into the network.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import Backbone, freeze_module
from .blocks import BasicBlock, Block, Bottleneck, init_weights, make_stage
from .blocks import ZeroPadShortcut, conv1x1, conv3x3  # noqa: F401 - importable from here, as before
from .norm import get_norm

__all__ = ["BasicBlock", "Bottleneck", "ZeroPadShortcut", "ResNet", "make_stage", "RESNET_LAYERS"]


class StemMaxPool(nn.MaxPool2d):
    """The stem's 3x3 max-pool; on the CPU, without a gradient to keep, it pools in channels-last.

    ATen's CPU max-pool is vectorised over channels only in channels-last: on an NCHW map of the demo's
    frozen stem (4 x 48 x 48 x 48, AVX2) it took 3.4-4.2 ms against 0.6-0.9 ms for the layout change,
    the pool and the change back, with the same numbers. Where a gradient flows through it (a trainable
    stem) the channels-last backward is the slower one (9 against 7 ms at 16 x 48 x 32 x 32), so the
    default path stays. Same module and (empty) state dict as ``nn.MaxPool2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or (x.requires_grad and torch.is_grad_enabled()) \
                or x.is_contiguous(memory_format=torch.channels_last) or torch.jit.is_tracing() \
                or torch.compiler.is_compiling():
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class StageSpec(NamedTuple):
    name: str  # res2..
    module: str  # layer1.. (torchvision's attribute name)
    inplanes: int
    planes: int
    blocks: int
    stride: int
    dilation: int
    first_dilation: int
    out_channels: int
    out_stride: int  # of the stage's output, relative to the input image


class ResNet(Backbone):
    # Subclasses (CIFAR) change the stem and the stage widths.
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem_channels: int = 64
    stem_stride: int = 4

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: Optional[int] = 1000,
        *,
        out_features: Optional[Sequence[str]] = None,
        plain: bool = False,
        shortcut: str = "B",
        stride_in_1x1: bool = False,
        norm: str = "BN",
        freeze_at: int = 0,
        dilation: Sequence[int] = (1, 1),
        zero_init_residual: bool = False,
        width: Optional[int] = None,
    ) -> None:
        super().__init__()
        if width is not None:  # this network's widths, in place of the class's (the paper's)
            self.stage_widths, self.stem_channels = self.scaled_widths(width)
        if len(layers) != len(self.stage_widths):
            raise ValueError(f"expected {len(self.stage_widths)} stage depths, got {list(layers)}")
        stage_names = [f"res{i + 2}" for i in range(len(layers))]
        valid = ["stem"] + stage_names
        if out_features is None:
            out_features = [stage_names[-1]] if num_classes is not None else stage_names
        out_features = list(out_features)
        unknown = [f for f in out_features if f not in valid]
        if not out_features or unknown:
            raise ValueError(f"out_features {out_features}: choose a subset of {valid}")
        out_features = sorted(set(out_features), key=valid.index)
        if zero_init_residual and plain:
            raise ValueError("zero_init_residual would zero every block of a plain network (no shortcut)")
        self.num_classes = num_classes
        self.depth_layers = list(layers)
        self.plain, self.shortcut, self.stride_in_1x1, self.norm = plain, shortcut, stride_in_1x1, norm
        self.out_features = out_features

        self._build_stem(norm)
        # A backbone builds stages up to the last one it returns; a classifier builds them all.
        last = len(stage_names) if num_classes is not None else max(valid.index(f) for f in out_features)
        self.out_channels = {"stem": self.stem_channels}
        self.strides = {"stem": self.stem_stride}
        for spec in self.stage_specs(block, layers, dilation, width=width)[:last]:
            stage = make_stage(block, spec.inplanes, spec.planes, spec.blocks, spec.stride, spec.dilation,
                               spec.first_dilation, plain=plain, shortcut=shortcut, stride_in_1x1=stride_in_1x1,
                               norm=norm)
            setattr(self, spec.module, stage)
            self.out_channels[spec.name], self.strides[spec.name] = spec.out_channels, spec.out_stride
        self._num_stages = last
        self.out_channels = {k: self.out_channels[k] for k in out_features}
        self.strides = {k: self.strides[k] for k in out_features}

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.stage_widths[-1] * block.expansion, num_classes)
        init_weights(self, zero_init_residual)

        self.freeze_at = 0
        self.freeze(freeze_at)

    def _build_stem(self, norm: str) -> None:
        self.conv1 = nn.Conv2d(3, self.stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, self.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = StemMaxPool(kernel_size=3, stride=2, padding=1)

    @classmethod
    def scaled_widths(cls, width: int) -> Tuple[Tuple[int, ...], int]:
        """``(stage widths, stem channels)`` with the first stage ``width`` wide and the rest in the
        class's proportions (ResNet-18 at ``width=32``: stem 32, stages 32, 64, 128, 256)."""
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        base = cls.stage_widths[0]
        return tuple(w * width // base for w in cls.stage_widths), cls.stem_channels * width // base

    @classmethod
    def stage_specs(cls, block: Block, layers: Sequence[int], dilation: Sequence[int] = (1, 1),
                    width: Optional[int] = None) -> List["StageSpec"]:
        """Where each stage starts and what it makes, without building anything (the network's plan).
        ``width``: the first stage's width, the others scaled alike (None: the class's own widths)."""
        stage_widths, stem_channels = cls.scaled_widths(width) if width is not None else \
            (cls.stage_widths, cls.stem_channels)
        dilation = list(dilation)
        if len(dilation) != 2 or dilation[1] < dilation[0] or any(d < 1 for d in dilation):
            raise ValueError(f"dilation [res4, res5] must be positive and non-decreasing, got {dilation}")
        stage_dilations = {"res4": dilation[0], "res5": dilation[1]}
        specs = []
        inplanes, stride_now, previous_dilation = stem_channels, cls.stem_stride, 1
        for i, (blocks, planes) in enumerate(zip(layers, stage_widths)):
            name = f"res{i + 2}"
            d = stage_dilations.get(name, 1)
            stride = 1 if i == 0 or d > 1 else 2  # a dilated stage keeps its input resolution
            out = planes * block.expansion
            specs.append(StageSpec(name, f"layer{i + 1}", inplanes, planes, blocks, stride, d, previous_dilation,
                                   out, stride_now * stride))
            inplanes, stride_now, previous_dilation = out, stride_now * stride, d
        return specs

    @classmethod
    def build_stage(cls, block: Block, layers: Sequence[int], stage: str, *, plain: bool = False,
                    shortcut: str = "B", stride_in_1x1: bool = False, norm: str = "BN", freeze_at: int = 0,
                    dilation: Sequence[int] = (1, 1), zero_init_residual: bool = False,
                    width: Optional[int] = None) -> nn.Sequential:
        """Stage ``stage`` (``res3``..) alone, exactly as the whole network would build, initialise and
        freeze it; ``in_channels`` and ``out_channels`` are set on the returned module."""
        specs = {s.name: s for s in cls.stage_specs(block, layers, dilation, width=width)}
        if stage not in specs or stage == "res2":
            raise ValueError(f"stage '{stage}': choose one of {', '.join(n for n in specs if n != 'res2')}")
        if zero_init_residual and plain:
            raise ValueError("zero_init_residual would zero every block of a plain network (no shortcut)")
        spec = specs[stage]
        module = make_stage(block, spec.inplanes, spec.planes, spec.blocks, spec.stride, spec.dilation,
                            spec.first_dilation, plain=plain, shortcut=shortcut, stride_in_1x1=stride_in_1x1,
                            norm=norm)
        init_weights(module, zero_init_residual)
        if freeze_at >= int(stage[3:]):  # as ResNet.freeze: freeze_at k covers res2..resk
            module = freeze_module(module)
        module.in_channels, module.out_channels = spec.inplanes, spec.out_channels
        return module

    def stages(self):
        """(name, module) of the built stages: ``res2`` -> ``layer1``, ..."""
        return [(f"res{i + 2}", getattr(self, f"layer{i + 1}")) for i in range(self._num_stages)]

    def freeze(self, at: int = 0) -> "ResNet":
        """Freeze the stem (at>=1) and stages res2..res{at} (as detectron2): no gradients, FrozenBN.

        Freezing is one-way: a smaller ``at`` later does not unfreeze.
        """
        if not 0 <= at <= 1 + len(self.stage_widths):
            raise ValueError(f"freeze_at must be in 0..{1 + len(self.stage_widths)}, got {at}")
        if at >= 1:
            self.conv1 = freeze_module(self.conv1)
            self.bn1 = freeze_module(self.bn1)
        for k, (name, stage) in enumerate(self.stages(), start=2):
            if at >= k:
                setattr(self, f"layer{k - 1}", freeze_module(stage))
        self.freeze_at = max(self.freeze_at, at)
        return self

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """The feature maps of ``out_features``; computes nothing after the last of them."""
        outputs: dict[str, Tensor] = {}
        wanted = self.out_features
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        if "stem" in wanted:
            outputs["stem"] = x
        for name, stage in self.stages():
            if len(outputs) == len(wanted):
                break
            x = stage(x)
            if name in wanted:
                outputs[name] = x
        return outputs

    def forward(self, x: Tensor):
        if self.num_classes is None:
            return self.forward_features(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for _, stage in self.stages():
            x = stage(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


RESNET_LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
