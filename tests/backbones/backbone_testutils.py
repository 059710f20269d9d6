"""Helpers for the backbone tests: non-trivial norm statistics, comparisons."""
import torch
from torch import nn


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN/FrozenBN statistics and affine parameters, so equality tests exercise them.

    Scales stay near 1 and means near 0 so activations neither vanish nor explode through 50 layers.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "running_var") and m.running_var is not None:
            n = m.running_var.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
