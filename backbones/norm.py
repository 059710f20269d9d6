"""Normalisation layers by name, and conversions between them.

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
           "is_norm", "BN_EPS"]

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


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d, nn.GroupNorm))


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
