"""Multiply-adds and parameter counts.

torch's FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matrix products (and
nothing for norms, activations, pooling); the ResNet paper's "FLOPs" are multiply-adds, so we halve
it. Counting runs on the meta device when the model lives there: no memory, no arithmetic.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-adds of one forward pass per image (the batch of ``input_size`` is divided out)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(*input_size, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2 // input_size[0]
