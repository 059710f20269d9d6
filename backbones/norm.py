"""Normalisation: the layers by name (and conversions between them), and the input normalisation
that each weights format states.

``get_norm("FrozenBN", 64)`` and friends let one option (``norm``) choose the layer everywhere a
network builds one. FrozenBN is torchvision's :class:`~torchvision.ops.misc.FrozenBatchNorm2d`: its
state-dict keys are those of ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var; it drops
``num_batches_tracked`` on load), so torchvision, timm and our own checkpoints load into either.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["NORMS", "get_norm", "convert_frozen_batchnorm", "convert_sync_batchnorm", "FrozenBatchNorm2d",
           "BN_EPS",
           "TORCHVISION_INPUT_NORM", "MSRA_INPUT_NORM", "normalize_image", "rgb01_mean_std", "check_input_norm"]

NORMS = ("BN", "SyncBN", "FrozenBN", "GN")
BN_EPS = 1e-5  # nn.BatchNorm2d's and torchvision FrozenBatchNorm2d's default (older torchvision used 0)
GN_GROUPS = 32


def _gn_groups(channels: int) -> int:
    # 32 groups (Wu & He); narrower layers (the 16-channel CIFAR stages) fall back to the largest
    # divisor of 32 that divides the channels, rather than failing.
    return math.gcd(GN_GROUPS, channels)


def get_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer called ``norm`` (BN, SyncBN, FrozenBN, GN) for ``channels`` channels."""
    if norm == "BN":
        return nn.BatchNorm2d(channels, eps=BN_EPS)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels, eps=BN_EPS)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels, eps=BN_EPS)
    if norm == "GN":
        return nn.GroupNorm(_gn_groups(channels), channels)
    raise ValueError(f"norm '{norm}' is not known; choose one of {', '.join(NORMS)}")


def _frozen_from(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    like = bn.running_mean if bn.running_mean is not None else bn.weight
    if like is not None:
        frozen.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm in ``module`` by a FrozenBatchNorm2d with its statistics.

    Children are replaced in place; if ``module`` itself is a batch norm the new module is returned,
    so always use the return value (as detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm``).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_from(module)
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """BatchNorm -> SyncBatchNorm for multi-process training (torch's own conversion)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)

# --------------------------------------------------------------------------------------------------
# Input normalisation: how images are normalised before they enter a network, recorded with the
# weights.
# --------------------------------------------------------------------------------------------------
# Images enter our models as RGB (docs/ARCHITECTURE.md); each weights format states its own normalisation as a
# dict ``{"color": "RGB"|"BGR", "scale": 1|255, "mean": [3], "std": [3]}``: pixels are first brought
# to ``[0, scale]``, channels reordered to ``color``, then ``(x - mean) / std`` per channel (mean and
# std in the same units and channel order). :func:`normalize_image` applies it in one place.

# torchvision and timm ImageNet weights: RGB in [0, 1], ImageNet statistics.
TORCHVISION_INPUT_NORM = {"color": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# The original MSRA / Caffe ResNets (as converted by Detectron): BGR in [0, 255] minus the mean pixel, std 1.
MSRA_INPUT_NORM = {"color": "BGR", "scale": 255.0, "mean": [103.53, 116.28, 123.675], "std": [1.0, 1.0, 1.0]}


def check_input_norm(norm: Dict) -> Dict:
    """Validate and return a normalised copy (floats, lists); raises ValueError naming the bad field."""
    missing = {"color", "scale", "mean", "std"} - set(norm)
    if missing:
        raise ValueError(f"input_norm lacks {sorted(missing)}: expected color, scale, mean, std")
    if norm["color"] not in ("RGB", "BGR"):
        raise ValueError(f"input_norm color must be RGB or BGR, got {norm['color']!r}")
    mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"input_norm mean and std need 3 values, got {mean} and {std}")
    return {"color": norm["color"], "scale": float(norm["scale"]), "mean": mean, "std": std}


def rgb01_mean_std(norm: Dict) -> Tuple[list, list]:
    """(mean, std) for RGB images in [0, 1], as torchvision's GeneralizedRCNNTransform expects.

    ``(scale*x - m) / s == (x - m/scale) / (s/scale)``, so scale folds into mean and std; for BGR
    weights the values are returned in RGB order, and the caller must still feed BGR (or flip the
    first convolution's input channels) — :func:`normalize_image` does the flip itself.
    """
    norm = check_input_norm(norm)
    mean = [m / norm["scale"] for m in norm["mean"]]
    std = [s / norm["scale"] for s in norm["std"]]
    if norm["color"] == "BGR":
        mean, std = mean[::-1], std[::-1]
    return mean, std


def normalize_image(images: torch.Tensor, norm: Dict) -> torch.Tensor:
    """RGB float images in [0, 1] (N,3,H,W or 3,H,W) -> the network's input for weights of ``norm``."""
    norm = check_input_norm(norm)
    x = images * norm["scale"] if norm["scale"] != 1.0 else images
    if norm["color"] == "BGR":
        x = x.flip(-3)
    shape = (3, 1, 1)
    mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device).view(shape)
    return (x - mean) / std
