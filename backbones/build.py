"""The one route from a config to a network (docs/ARCHITECTURE.md): every task builds through here.

    build_backbone(cfg, *, fpn=None, **overrides)      the feature extractor, optionally under an FPN
    build_classifier(cfg, num_classes, **overrides)    the classifier (global pooling and ``fc``)
    build_resnet_stage(cfg, stage, **overrides)        one ResNet stage alone (a C4 detector's res5 head)
    available_networks()                               our own network names

``cfg`` is a :class:`~backbones.config.BackboneConfig` or a network name; keyword overrides replace
its fields (a name plus overrides builds ``BackboneConfig(name=..., **overrides)``, as
``timm.create_model`` does). ``cfg.weights`` is loaded by the builder; the
:class:`~backbones.weights.LoadReport` is ``model.load_report`` (None without weights).

Names: ``resnet18``..``resnet152``, ``plain18``..``plain152``, ``cifar_resnet20``..``cifar_resnet1202``,
``cifar_plain20``..``cifar_plain110``, and ``timm:<model>`` for any timm model. ``shortcut: auto``
is the network's own default (B for ImageNet ResNets, A for the CIFAR ones, as in the paper).
"""
from __future__ import annotations

import dataclasses
import difflib
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Type, Union

from torch import nn

from .base import Backbone
from .cifar import CIFAR_DEPTHS, CIFAR_PLAIN_DEPTHS, CifarResNet, cifar_layers
from .config import BackboneConfig, timm_model_name
from .fpn import FPN, FPNOptions
from .resnet import RESNET_LAYERS, BasicBlock, Bottleneck, ResNet
from .timm_backbone import TimmBackbone, timm_classifier
from .weights import check_backbone_fit, load_weights

__all__ = ["available_networks", "build_backbone", "build_classifier", "build_resnet_stage"]


class _Network(NamedTuple):
    make: Callable[..., ResNet]  # (num_classes, **options) -> the network
    cls: Type[ResNet]
    block: type
    layers: Sequence[int]
    plain: bool
    shortcut: str  # what "auto" means for it


_NETWORKS: Dict[str, _Network] = {}
for _d, (_block, _layers) in RESNET_LAYERS.items():
    for _plain, _prefix in ((False, "resnet"), (True, "plain")):
        _NETWORKS[f"{_prefix}{_d}"] = _Network(partial(ResNet, _block, _layers, plain=_plain), ResNet,
                                               _block, _layers, _plain, "B")
for _depths, _plain, _prefix in ((CIFAR_DEPTHS, False, "cifar_resnet"), (CIFAR_PLAIN_DEPTHS, True, "cifar_plain")):
    for _d in _depths:
        _NETWORKS[f"{_prefix}{_d}"] = _Network(partial(CifarResNet, _d, plain=_plain), CifarResNet,
                                               BasicBlock, cifar_layers(_d), _plain, "A")


def available_networks() -> List[str]:
    """Our own network names; any ``timm:<model>`` is accepted besides.

    >>> "resnet50" in available_networks() and "cifar_resnet110" in available_networks()
    True
    """
    return list(_NETWORKS)


def _network(name: str) -> _Network:
    if name in _NETWORKS:
        return _NETWORKS[name]
    if timm_model_name(name) is not None:
        raise ValueError(f"{name}: a timm model, not one of our ResNets")
    close = difflib.get_close_matches(name, list(_NETWORKS), n=4, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"valid: {', '.join(_NETWORKS)}"
    raise ValueError(f"unknown network '{name}' ({hint}; or timm:<model> for any timm model)")


def _config(cfg: Union[BackboneConfig, str], overrides: dict) -> BackboneConfig:
    """The config to build: ``cfg`` with ``overrides``, validated (ConfigError is a ValueError)."""
    valid = [f.name for f in dataclasses.fields(BackboneConfig)]
    if isinstance(cfg, str):
        # a bare name returns the network's own outputs, not the config file default res2..res5
        cfg = BackboneConfig(name=cfg, out_features=None)
    unknown = [k for k in overrides if k not in valid or k == "name"]
    if unknown:
        raise ValueError(f"{cfg.name}: unknown options {unknown}; valid: {', '.join(valid[1:])}")
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg


def _resnet_options(cfg: BackboneConfig, net: _Network) -> dict:
    return dict(norm=cfg.norm, freeze_at=cfg.freeze_at, stride_in_1x1=cfg.stride_in_1x1,
                shortcut=net.shortcut if cfg.shortcut == "auto" else cfg.shortcut,
                dilation=list(cfg.dilation), zero_init_residual=cfg.zero_init_residual, width=cfg.width)


# Fields that only our ResNets understand, at the values that ask for nothing special.
_TIMM_NEUTRAL = {"stride_in_1x1": (False,), "shortcut": ("auto", "B"), "zero_init_residual": (False,),
                 "width": (None,)}
# timm's classifiers are timm's own networks: they take none of the backbone options either.
_TIMM_CLASSIFIER_NEUTRAL = dict(_TIMM_NEUTRAL, norm=("BN",), freeze_at=(0,), dilation=([1, 1],))


def _check_timm(cfg: BackboneConfig, neutral: dict) -> str:
    for key, values in neutral.items():
        value = getattr(cfg, key)
        if (list(value) if key == "dilation" else value) not in values:
            raise ValueError(f"{cfg.name}: option {key}={value!r} applies to our ResNets, not to timm models")
    return timm_model_name(cfg.name)


def _load(model: nn.Module, cfg: BackboneConfig) -> nn.Module:
    model.load_report = load_weights(model, cfg.weights, format=cfg.weights_format) if cfg.weights else None
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
    cfg = _config(cfg, overrides)
    fpn = FPNOptions() if fpn is True else fpn or None
    out_features = list(fpn.in_features) if fpn else cfg.out_features
    timm_name = timm_model_name(cfg.name)
    if timm_name is not None:
        _check_timm(cfg, _TIMM_NEUTRAL)
        model = TimmBackbone(timm_name, out_features=out_features, norm=cfg.norm, freeze_at=cfg.freeze_at,
                             dilation=cfg.dilation)
    else:
        net = _network(cfg.name)
        model = net.make(None, out_features=out_features, **_resnet_options(cfg, net))
    if fpn:
        model = FPN(model, **dataclasses.asdict(fpn))
    return _load(model, cfg)


def build_classifier(cfg: Union[BackboneConfig, str], num_classes: int = 1000, **overrides) -> nn.Module:
    """The network with global pooling and ``fc`` (torchvision's names); ``forward(x)`` -> logits.

    ``cfg.out_features`` does not apply. A ``timm:<model>`` is timm's own classifier.

    >>> import torch
    >>> model = build_classifier("cifar_resnet20", 10)
    >>> model(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    cfg = _config(cfg, overrides)
    timm_name = timm_model_name(cfg.name)
    if timm_name is not None:
        model = timm_classifier(_check_timm(cfg, _TIMM_CLASSIFIER_NEUTRAL), num_classes)
    else:
        net = _network(cfg.name)
        model = net.make(num_classes, **_resnet_options(cfg, net))
    return _load(model, cfg)


def build_resnet_stage(cfg: Union[BackboneConfig, str], stage: str = "res5", **overrides) -> nn.Sequential:
    """Stage ``stage`` of the ResNet ``cfg`` describes, alone, built as the whole network would build
    it (the ``res5`` head of a C4 detector), without building the stages before it.

    Parameter names inside are those of ``layerN`` (``0.conv1.weight``...); ``cfg.weights`` loads its
    ``layerN.*`` tensors. ``in_channels`` and ``out_channels`` are set on the returned module.

    >>> res5 = build_resnet_stage("resnet50", "res5", norm="FrozenBN")
    >>> res5.in_channels, res5.out_channels
    (1024, 2048)
    """
    cfg = _config(cfg, overrides)
    net = _network(cfg.name)
    module = net.cls.build_stage(net.block, net.layers, stage, plain=net.plain, **_resnet_options(cfg, net))
    module.load_report = None
    if cfg.weights:
        holder = nn.Module()  # gives the stage its name in the whole network, so the file's keys match
        holder.add_module(f"layer{int(stage[3:]) - 1}", module)
        report = load_weights(holder, cfg.weights, format=cfg.weights_format)
        if report.format == "msra" and not cfg.stride_in_1x1 and net.block is Bottleneck:
            raise ValueError("MSRA/Detectron weights put the bottleneck stride in the first 1x1 convolution; "
                             "build the stage with stride_in_1x1=True")
        check_backbone_fit(report)
        module.load_report = report
    return module
