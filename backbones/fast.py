"""The inference fast path: batch norms folded into convolutions, channels-last memory.

In eval mode a (frozen) batch norm is an affine map per channel, so ``norm(conv(x))`` is one
convolution with rescaled weights and a bias: folding removes a full pass over every feature map.
We fold over the structure we know (``convK``/``bnK`` pairs of ResNet blocks and stems, and
``Sequential(conv, norm, ...)`` such as ``downsample`` and the FPN's conv-norm blocks) with torch's
``fuse_conv_bn_weights``, which takes the statistics as tensors and so serves FrozenBN too. GroupNorm
cannot be folded (its statistics depend on the input) and is left as it is.

On CPUs the folded ResNet blocks then run as oneDNN convolutions with the ReLU and the residual
addition fused in (``torch.ops.mkldnn._convolution_pointwise``, the kernels torch.compile's CPU
backend emits): each block reads and writes its feature maps once instead of three times, which is
most of what is left after folding. That op is internal to torch, so we use it only after checking
once that it exists and matches eager results, and blocks fall back to eager ops for any input it does
not serve (other devices, dtypes other than float32, gradients).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

from .resnet import BasicBlock, Bottleneck

__all__ = ["prepare_for_inference", "fold_conv_norm", "prefers_channels_last", "FusedResidualBlock",
           "onednn_fusion_available"]

_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _foldable(norm) -> bool:
    if isinstance(norm, FrozenBatchNorm2d) or type(norm).__name__ == "FrozenBatchNorm2d":  # timm's has the same buffers
        return True
    # exact types only: subclasses such as timm's BatchNormAct2d also apply an activation
    return type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm) and norm.track_running_stats and norm.affine


@torch.no_grad()
def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold ``norm`` (eval-mode BN or FrozenBN) into ``conv`` in place; computed in float64."""
    dtype = conv.weight.dtype
    weight, bias = fuse_conv_bn_weights(
        conv.weight.double(), None if conv.bias is None else conv.bias.double(),
        norm.running_mean.double(), norm.running_var.double(), norm.eps,
        norm.weight.double(), norm.bias.double())
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)


def prefers_channels_last(device: torch.device) -> bool:
    """Where channels-last convolutions are the faster layout: oneDNN on CPUs, tensor-core GPUs."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 7
    return False


def _pointwise():
    return getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _conv_args(conv: nn.Conv2d):
    if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
        raise ValueError("fused convolutions need numeric zero padding")
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


@functools.lru_cache(maxsize=None)
def onednn_fusion_available() -> bool:
    """Whether torch's oneDNN conv+ReLU and conv+add+ReLU kernels exist here and agree with eager ops."""
    op = _pointwise()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, other = torch.randn(2, 8, 9, 9, generator=g), torch.randn(2, 8, 9, 9, generator=g)
        w, b = torch.randn(8, 8, 3, 3, generator=g), torch.randn(8, generator=g)
        args = ([1, 1], [1, 1], [1, 1], 1)
        with torch.inference_mode():
            y1 = op(x, w, b, *args, "relu", [], "")
            y2 = op.binary(x, other, w, b, *args, "add", None, "relu", [], None)
            ref = F.conv2d(x, w, b, 1, 1)
        return bool(torch.allclose(y1, ref.relu(), atol=1e-4) and torch.allclose(y2, (ref + other).relu(), atol=1e-4))
    except Exception:  # noqa: BLE001 - any failure means: use the eager path
        return False


class FusedResidualBlock(nn.Module):
    """A folded BasicBlock / Bottleneck whose convolutions carry their ReLU and the residual add.

    Holds the block's own convolutions and shortcut under their names (``conv1``.., ``downsample``).
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.convs = ["conv1", "conv2"] + (["conv3"] if isinstance(block, Bottleneck) else [])
        for name in self.convs:
            setattr(self, name, getattr(block, name))
        self.downsample = block.downsample
        self.residual = block.residual
        self._args = [_conv_args(getattr(self, name)) for name in self.convs]

    def _eager(self, x: Tensor) -> Tensor:
        out = x
        for name in self.convs[:-1]:
            out = F.relu(getattr(self, name)(out))
        out = getattr(self, self.convs[-1])(out)
        if self.residual:
            out = out + (self.downsample(x) if self.downsample is not None else x)
        return F.relu(out)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or (torch.is_grad_enabled() and x.requires_grad):
            return self._eager(x)
        op = _pointwise()
        out = x
        for name, args in zip(self.convs[:-1], self._args[:-1]):
            conv = getattr(self, name)
            out = op(out, conv.weight, conv.bias, *args, "relu", [], "")
        last, args = getattr(self, self.convs[-1]), self._args[-1]
        if not self.residual:
            return op(out, last.weight, last.bias, *args, "relu", [], "")
        identity = self.downsample(x) if self.downsample is not None else x
        return op.binary(out, identity, last.weight, last.bias, *args, "add", None, "relu", [], None)


def _fuse_blocks(model: nn.Module) -> int:
    fused = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (BasicBlock, Bottleneck)) and all(
                    isinstance(getattr(child, f"bn{i}", nn.Identity()), nn.Identity) for i in (1, 2, 3)):
                setattr(parent, name, FusedResidualBlock(child))
                fused += 1
    return fused


def prepare_for_inference(model: nn.Module, channels_last="auto", fuse_activations="auto") -> nn.Module:
    """Eval mode, norms folded into the preceding convolutions (replaced by Identity), channels-last,
    and on CPUs ReLU and residual additions fused into the convolutions of our ResNet blocks.

    Works in place on a classifier, a backbone or an FPN backbone and returns the model; outputs equal
    the unfused model's within float rounding (1e-4 relative). The result is for inference only: its
    state dict has conv biases instead of norms. ``channels_last`` and ``fuse_activations``: True,
    False or "auto" (where faster and available).
    """
    model.eval()
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _PAIRS:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.Conv2d) and _foldable(norm):
                fold_conv_norm(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and _foldable(module[i + 1]):
                    fold_conv_norm(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
                    folded += 1
    model.folded_norms = folded
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if fuse_activations == "auto":
        fuse_activations = device.type == "cpu" and onednn_fusion_available()
    model.fused_blocks = _fuse_blocks(model) if fuse_activations else 0
    if channels_last == "auto":
        channels_last = prefers_channels_last(device)
    if channels_last:
        # Weights in channels-last make the first convolution produce channels-last maps, which then
        # flow through the whole network; callers may also pass channels-last inputs.
        model.to(memory_format=torch.channels_last)
    model.channels_last = bool(channels_last)
    return model
