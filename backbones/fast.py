"""The inference fast path: batch norms folded into convolutions, channels-last memory.

In eval mode a (frozen) batch norm is an affine map per channel, so ``norm(conv(x))`` is one
convolution with rescaled weights and a bias: folding removes a full pass over every feature map.
We fold over the structure we know (``convK``/``bnK`` pairs of ResNet blocks and stems, and
``Sequential(conv, norm, ...)`` such as ``downsample`` and the FPN's conv-norm blocks) with torch's
``fuse_conv_bn_weights``, which takes the statistics as tensors and so serves FrozenBN too. GroupNorm
cannot be folded (its statistics depend on the input) and is left as it is.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["prepare_for_inference", "fold_conv_norm", "prefers_channels_last"]

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


def prepare_for_inference(model: nn.Module, channels_last="auto") -> nn.Module:
    """Eval mode, norms folded into the preceding convolutions (replaced by Identity), channels-last.

    Works in place on a classifier, a backbone or an FPN backbone and returns the model; outputs equal
    the unfused model's within float rounding (1e-4 relative). The result is for inference only: its
    state dict has conv biases instead of norms. ``channels_last``: True, False or "auto" (where faster).
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
    if channels_last == "auto":
        first = next(model.parameters(), None)
        channels_last = prefers_channels_last(first.device if first is not None else torch.device("cpu"))
    if channels_last:
        # Weights in channels-last make the first convolution produce channels-last maps, which then
        # flow through the whole network; callers may also pass channels-last inputs.
        model.to(memory_format=torch.channels_last)
    model.channels_last = bool(channels_last)
    return model
