"""``model.backbone`` of every task's config: which network, which weights, and how it is built.

The config machinery (YAML, ``_base_``, strict types, the one-line :class:`~engine.config.ConfigError`)
is :mod:`engine.config`'s; the backbone vocabulary lives here, beside the networks it names, so the
engine never needs to know it (docs/ARCHITECTURE.md, "Layers"). :func:`backbones.build.build_backbone`
turns a :class:`BackboneConfig` into a network; every task builds through it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import List, Optional

from engine.config import ConfigError, choice
from engine.resume import starting_weights_required

from .locate import check_weights_name, is_weights_name

__all__ = ["BackboneConfig", "TIMM_PREFIX", "timm_model_name", "replaces_backbone"]

# Any timm model joins as ``timm:<model>`` (timm's own name, pretrained tags allowed: resnet50.a1_in1k).
TIMM_PREFIX = "timm:"


def timm_model_name(name: str) -> Optional[str]:
    """timm's model name in ``timm:<model>``; None for our own networks (``resnet50``, ``plain34``...)."""
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None


def replaces_backbone(model_weights: Optional[str], partial=()) -> bool:
    """Whether whole-model weights (a task's ``model.weights``) fill the backbone, so that its starting
    weights (``model.backbone.weights``) are neither read nor required: true when they are given and
    ``partial`` (``model.weights_partial``) does not let backbone tensors be missing from them."""
    return bool(model_weights) and not any(p == "*" or p.startswith("backbone") for p in partial)


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18..152, plain18.., cifar_resnet20.., timm:<model>
    # local file (torchvision / timm / reskit / safetensors / MSRA .pkl) or a name (backbones/hub.py):
    # torchvision:ResNet50_Weights.IMAGENET1K_V2, timm:resnet50.a1_in1k, detectron2://ImageNetPretrained/MSRA/R-50.pkl
    weights: Optional[str] = None
    weights_format: str = "auto"  # auto | reskit | torchvision | timm | safetensors | msra
    norm: str = "BN"  # BN | SyncBN | FrozenBN | GN
    freeze_at: int = 0  # 0 none, 1 stem, 2 stem+res2, ... (as detectron2)
    stride_in_1x1: bool = False  # MSRA placement of the stride (True) or torchvision's (False)
    # A zero-padded identity | B projection where shape changes | C all projections |
    # auto: the network's own default (B for ImageNet ResNets, A for CIFAR ResNets, as in the paper)
    shortcut: str = "auto"
    dilation: List[int] = field(default_factory=lambda: [1, 1])  # dilation of res4, res5
    # null: the network's own outputs (every stage; timm: every level but the stem)
    out_features: Optional[List[str]] = field(default_factory=lambda: ["res2", "res3", "res4", "res5"])
    zero_init_residual: bool = False  # last norm of each block starts at zero
    # channels of the first stage, the others in proportion (ResNet-18 at 32: 32, 64, 128, 256;
    # 4x fewer multiply-adds); null: the network's own (64 for ImageNet ResNets, 16 for CIFAR ones)
    width: Optional[int] = None
    lr_mult: float = 1.0  # backbone learning rate = base_lr * lr_mult (fine-tuning)

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "norm", self.norm, ["BN", "SyncBN", "FrozenBN", "GN"])
        choice(prefix + "shortcut", self.shortcut, ["auto", "A", "B", "C"])
        choice(prefix + "weights_format", self.weights_format,
               ["auto", "reskit", "torchvision", "timm", "safetensors", "msra"])
        if len(self.dilation) != 2 or any(d not in (1, 2, 4) for d in self.dilation):
            raise ConfigError(f"{prefix}dilation: expected [res4, res5] dilations from 1, 2, 4, "
                              f"got {list(self.dilation)}")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"{prefix}width: expected a positive number of channels (or null), got {self.width}")
        if not 0 <= self.freeze_at <= 5:
            raise ConfigError(f"{prefix}freeze_at: expected 0..5, got {self.freeze_at}")
        if self.weights and is_weights_name(self.weights):  # torchvision:..., timm:..., detectron2://...
            try:
                check_weights_name(self.weights)
            except ValueError as e:
                raise ConfigError(f"{prefix}weights: {e}") from None
        # Whether the file must exist is the model section's call (check_weights_file): whole-model
        # weights (model.weights, a checkpoint to evaluate) replace the backbone's starting weights.

    def check_weights_file(self, prefix: str = "") -> None:
        """One line when ``weights`` names a file that is not there. Called by a task's model section
        when the starting weights will be loaded, i.e. when no whole-model weights replace them (nor a
        checkpoint being resumed: engine.resume)."""
        if not starting_weights_required():
            return
        if self.weights and not is_weights_name(self.weights) and not os.path.isfile(self.weights):
            raise ConfigError(f"{prefix}weights: file not found: {self.weights}")

    def network_options(self) -> dict:
        """The fields that shape the network (all but name, weights, weights_format, lr_mult): what a
        checkpoint records so the same network can be built again."""
        skip = {"name", "weights", "weights_format", "lr_mult"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
