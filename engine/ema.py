"""Exponential moving average of the weights, through timm's ModelEmaV3."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn


class ModelEMA:
    """EMA of every parameter and buffer: ``ema = decay * ema + (1 - decay) * model`` after each step.

    A thin layer over ``timm.utils.ModelEmaV3`` (foreach lerp, deterministic) that keeps the float32
    copy on the model's device and gives the checkpoint a plain state dict.
    """

    def __init__(self, model: nn.Module, decay: float):
        # timm on first use only: importing it costs every training process ~0.3 s (its models, hub
        # client) and most runs keep no EMA
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """``step`` = optimizer steps done; the first update copies the weights (timm: decay 0 at step 1)."""
        self.ema.update(model, step=step)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.ema.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.ema.module.load_state_dict(state)
