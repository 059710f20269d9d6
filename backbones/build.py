"""Entry points: networks by name, as classifiers or as backbones, from options or from a config.

Names: ``resnet18``..``resnet152``, ``plain18``..``plain152``, ``cifar_resnet20``..``cifar_resnet1202``,
``cifar_plain20``..``cifar_plain110``, and ``timm:<model>`` for any timm model. Options are the
fields of :class:`engine.config.BackboneConfig` (``norm``, ``freeze_at``, ``stride_in_1x1``,
``shortcut``, ``dilation``, ``out_features``, ``zero_init_residual``); ``shortcut=None`` or "auto"
means the network's own default (B for ImageNet ResNets, A for the CIFAR ones, as in the paper).
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from engine.config import BackboneConfig

from .base import Backbone
from .cifar import CIFAR_DEPTHS, CIFAR_PLAIN_DEPTHS, CifarResNet
from .fpn import FPN
from .resnet import RESNET_LAYERS, ResNet
from .timm_backbone import TimmBackbone, timm_classifier
from .weights import load_weights

__all__ = ["available_networks", "build_classifier", "build_backbone", "build_fpn_backbone",
           "build_backbone_from_config", "build_classifier_from_config", "backbone_options", "build_resnet_stage"]

_RESNET_OPTIONS = ("norm", "freeze_at", "stride_in_1x1", "shortcut", "dilation", "out_features", "zero_init_residual")
# Option values that mean "nothing special": accepted by every network, including timm ones.
_NEUTRAL = {"stride_in_1x1": False, "shortcut": ("B", "auto", None), "zero_init_residual": False}


def _imagenet(depth: int, plain: bool) -> Callable[..., ResNet]:
    def build(num_classes, shortcut=None, **options) -> ResNet:
        block, layers = RESNET_LAYERS[depth]
        return ResNet(block, layers, num_classes, plain=plain, shortcut=_default(shortcut, "B"), **options)
    return build


def _cifar(depth: int, plain: bool) -> Callable[..., CifarResNet]:
    def build(num_classes, shortcut=None, **options) -> CifarResNet:
        return CifarResNet(depth, num_classes, plain=plain, shortcut=_default(shortcut, "A"), **options)
    return build


def _default(shortcut: Optional[str], default: str) -> str:
    return default if shortcut in (None, "auto") else shortcut


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
for _d in RESNET_LAYERS:
    _BUILDERS[f"resnet{_d}"] = _imagenet(_d, plain=False)
    _BUILDERS[f"plain{_d}"] = _imagenet(_d, plain=True)
for _d in CIFAR_DEPTHS:
    _BUILDERS[f"cifar_resnet{_d}"] = _cifar(_d, plain=False)
for _d in CIFAR_PLAIN_DEPTHS:
    _BUILDERS[f"cifar_plain{_d}"] = _cifar(_d, plain=True)


def available_networks() -> List[str]:
    """Our own network names; any ``timm:<model>`` is accepted besides."""
    return list(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name in _BUILDERS:
        return _BUILDERS[name]
    close = difflib.get_close_matches(name, list(_BUILDERS), n=4, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"valid: {', '.join(_BUILDERS)}"
    raise ValueError(f"unknown network '{name}' ({hint}; or timm:<model> for any timm model)")


def _timm_options(name: str, options: dict) -> dict:
    for key, neutral in _NEUTRAL.items():
        if key in options:
            value = options.pop(key)
            if value != neutral and not (isinstance(neutral, tuple) and value in neutral):
                raise ValueError(f"{name}: option {key}={value!r} applies to our ResNets, not to timm models")
    return options


def build_classifier(name: str, num_classes: int = 1000, **options) -> nn.Module:
    """The network with global pooling and ``fc`` (torchvision's parameter names); forward -> logits."""
    if name.startswith("timm:"):
        _timm_options(name, options)
        if options:
            raise ValueError(f"{name}: the timm classifier takes no options {sorted(options)}")
        return timm_classifier(name[len("timm:"):], num_classes)
    _check_options(name, options)
    return _builder(name)(num_classes, **options)


def _check_options(name: str, options: dict) -> None:
    unknown = [k for k in options if k not in _RESNET_OPTIONS]
    if unknown:
        raise ValueError(f"{name}: unknown options {unknown}; valid: {', '.join(_RESNET_OPTIONS)}")


def build_backbone(name: str, *, fpn: bool = False, **options) -> Backbone:
    """The feature extractor: ``forward(x) -> {name: map}`` with ``out_channels``/``strides``.

    ``fpn=True`` puts an FPN on it (see :func:`build_fpn_backbone` for the FPN's own options).
    """
    if fpn:
        return build_fpn_backbone(name, **options)
    if name.startswith("timm:"):
        return TimmBackbone(name[len("timm:"):], **_timm_options(name, dict(options)))
    _check_options(name, options)
    return _builder(name)(None, **options)


def build_fpn_backbone(name: str, *, in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                       out_channels: int = 256, top_block: Optional[str] = "maxpool", fpn_norm: Optional[str] = None,
                       **options) -> FPN:
    """``FPN(build_backbone(name, out_features=in_features, **options))``: outputs p2..p6 by default."""
    options = dict(options)
    options["out_features"] = list(in_features)  # the pyramid decides what the bottom-up returns
    bottom_up = build_backbone(name, **options)
    return FPN(bottom_up, in_features, out_channels=out_channels, top_block=top_block, norm=fpn_norm)


def backbone_options(cfg: BackboneConfig) -> dict:
    """The build options of a config (every field but ``name``, ``weights``, ``weights_format``, ``lr_mult``)."""
    skip = {"name", "weights", "weights_format", "lr_mult"}
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}


def _load_configured_weights(model: nn.Module, cfg: BackboneConfig, target: nn.Module) -> nn.Module:
    if cfg.weights:
        model.load_report = load_weights(target, cfg.weights, format=cfg.weights_format)
    return model


def build_backbone_from_config(cfg: BackboneConfig, fpn: bool = False, **fpn_options) -> Backbone:
    """Build as the config says and load ``cfg.weights`` if set; the report is ``model.load_report``.

    With ``fpn=True``, ``fpn_options`` (in_features, out_channels, top_block, fpn_norm) shape the
    pyramid and the bottom-up returns what it needs, whatever ``cfg.out_features`` says.
    """
    options = backbone_options(cfg)
    if fpn:
        options.pop("out_features")
        model = build_fpn_backbone(cfg.name, **fpn_options, **options)
    else:
        model = build_backbone(cfg.name, **options)
    return _load_configured_weights(model, cfg, model)


def build_classifier_from_config(cfg: BackboneConfig, num_classes: int) -> nn.Module:
    """The classifier of ``cfg.name`` (``out_features`` does not apply), with ``cfg.weights`` loaded."""
    options = backbone_options(cfg)
    options.pop("out_features")
    if cfg.name.startswith("timm:"):
        for key in ("norm", "freeze_at", "dilation"):
            value = options.pop(key)
            if value != dataclasses.asdict(BackboneConfig())[key]:
                raise ValueError(f"{cfg.name}: option {key}={value!r} is not supported for timm classifiers")
    model = build_classifier(cfg.name, num_classes, **options)
    return _load_configured_weights(model, cfg, model)


def build_resnet_stage(name: str, stage: str = "res5", **options) -> nn.Sequential:
    """One stage of ResNet ``name`` built as the backbone would (e.g. the ``res5`` head of a C4 detector).

    Parameter names inside are those of ``layerN`` (``0.conv1.weight``...), so ``layer4.*`` weights
    load with the prefix changed; ``in_channels`` and ``out_channels`` are set on the returned module.
    """
    if not stage.startswith("res") or stage == "res2":
        raise ValueError(f"build_resnet_stage: '{stage}' must be one of res3, res4, res5")
    model = build_backbone(name, **dict(options, out_features=[f"res{int(stage[3:]) - 1}", stage]))
    if not isinstance(model, ResNet):
        raise ValueError(f"build_resnet_stage: {name} is not one of our ResNets")
    module = getattr(model, f"layer{int(stage[3:]) - 1}")
    module.in_channels = model.out_channels[f"res{int(stage[3:]) - 1}"]
    module.out_channels = model.out_channels[stage]
    return module
