"""The one route from a config to a network (docs/ARCHITECTURE.md): every task builds through here.

    build_backbone(cfg, *, fpn=None, **overrides)      the feature extractor, optionally under an FPN
    build_classifier(cfg, num_classes, **overrides)    the classifier (global pooling and ``fc``)
    build_resnet_stage(cfg, stage, **overrides)        one ResNet stage alone (a C4 detector's res5 head)
    available_networks()                               our own network names
    load_pretrained(model, source, ...)                backbone weights (a file or a weights name) into a model

``cfg`` is a :class:`~backbones.config.BackboneConfig` or a network name; keyword overrides replace
its fields (a name plus overrides builds ``BackboneConfig(name=..., **overrides)``, as
``timm.create_model`` does). ``cfg.weights`` (a file or a name, :mod:`backbones.hub`) is loaded by
the builder; the :class:`~backbones.weights.LoadReport` is ``model.load_report`` (None without weights).

Names: ``resnet18``..``resnet152``, ``plain18``..``plain152``, ``cifar_resnet20``..``cifar_resnet1202``,
``cifar_plain20``..``cifar_plain110``, and ``timm:<model>`` for any timm model. ``shortcut: auto``
is the network's own default (B for ImageNet ResNets, A for the CIFAR ones, as in the paper).
The networks themselves are made in :mod:`backbones.networks`; this module adds the weights.
"""
from __future__ import annotations

from typing import Union

from torch import nn

from engine.checkpoint import LoadReport

from .base import Backbone
from .config import BackboneConfig
from .fpn import FPNOptions
from .hub import resolve_source
from .networks import available_networks, make_backbone, make_classifier, make_resnet_stage, network, network_config
from .resnet import Bottleneck
from .weights import check_backbone_fit, load_weights

__all__ = ["available_networks", "build_backbone", "build_classifier", "build_resnet_stage", "load_pretrained"]


def load_pretrained(model: nn.Module, source, format: str = "auto", strict_shapes: bool = True) -> LoadReport:
    """:func:`backbones.weights.load_weights` for any source a config may name: a file, weights in
    memory, or a weights name (``torchvision:...``, ``timm:...``, ``detectron2://...``), converted once."""
    return load_weights(model, resolve_source(source), format=format, strict_shapes=strict_shapes)


def _load(model: nn.Module, cfg: BackboneConfig) -> nn.Module:
    cfg.check_weights_file()  # the starting weights are loaded now: a missing file is one line
    model.load_report = load_pretrained(model, cfg.weights, format=cfg.weights_format) if cfg.weights else None
    check_backbone_fit(model.load_report)  # most of the network random is a failure, not a start
    return model


def build_backbone(cfg: Union[BackboneConfig, str], *, fpn: Union[FPNOptions, bool, None] = None,
                   **overrides) -> Backbone:
    """The feature extractor: ``forward(x) -> {name: map}`` with ``out_channels`` and ``strides``.

    ``fpn`` (``FPNOptions``, or True for the defaults) puts an FPN on it; the bottom-up network then
    returns the pyramid's ``in_features`` whatever ``cfg.out_features`` says. ``cfg.weights`` loads
    into the returned network (an FPN's own layers are reported missing from plain backbone weights).

    >>> model = build_backbone("resnet18", norm="FrozenBN", freeze_at=2)
    >>> model.out_features, model.strides["res5"]
    (['res2', 'res3', 'res4', 'res5'], 32)
    >>> build_backbone(BackboneConfig(name="resnet18"), fpn=FPNOptions(out_channels=64)).out_features
    ['p2', 'p3', 'p4', 'p5', 'p6']
    """
    cfg = network_config(cfg, overrides)
    fpn = FPNOptions() if fpn is True else fpn or None
    return _load(make_backbone(cfg, fpn), cfg)


def build_classifier(cfg: Union[BackboneConfig, str], num_classes: int = 1000, **overrides) -> nn.Module:
    """The network with global pooling and ``fc`` (torchvision's names); ``forward(x)`` -> logits.

    ``cfg.out_features`` does not apply. A ``timm:<model>`` is timm's own classifier.

    >>> import torch
    >>> model = build_classifier("cifar_resnet20", 10)
    >>> model(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    cfg = network_config(cfg, overrides)
    return _load(make_classifier(cfg, num_classes), cfg)


def build_resnet_stage(cfg: Union[BackboneConfig, str], stage: str = "res5", **overrides) -> nn.Sequential:
    """Stage ``stage`` of the ResNet ``cfg`` describes, alone, built as the whole network would build
    it (the ``res5`` head of a C4 detector), without building the stages before it.

    Parameter names inside are those of ``layerN`` (``0.conv1.weight``...); ``cfg.weights`` loads its
    ``layerN.*`` tensors. ``in_channels`` and ``out_channels`` are set on the returned module.

    >>> res5 = build_resnet_stage("resnet50", "res5", norm="FrozenBN")
    >>> res5.in_channels, res5.out_channels
    (1024, 2048)
    """
    cfg = network_config(cfg, overrides)
    module = make_resnet_stage(cfg, stage)
    module.load_report = None
    if cfg.weights:
        holder = nn.Module()  # gives the stage its name in the whole network, so the file's keys match
        holder.add_module(f"layer{int(stage[3:]) - 1}", module)
        report = load_pretrained(holder, cfg.weights, format=cfg.weights_format)
        if report.format == "msra" and not cfg.stride_in_1x1 and network(cfg.name).block is Bottleneck:
            raise ValueError("MSRA/Detectron weights put the bottleneck stride in the first 1x1 convolution; "
                             "build the stage with stride_in_1x1=True")
        check_backbone_fit(report)
        module.load_report = report
    return module
