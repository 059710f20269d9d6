"""Networks by name, built without weights: the table of our ResNets and the constructors that
:mod:`backbones.build` (which adds the weights) and :mod:`backbones.transfer` (which checks weights
against a fresh network) share. Users build through :mod:`backbones.build` (docs/ARCHITECTURE.md).

``shortcut: auto`` is the network's own default (B for ImageNet ResNets, A for the CIFAR ones, as in
the paper). ``cfg.weights`` is ignored here.
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
from .resnet import RESNET_LAYERS, BasicBlock, ResNet
from .timm_backbone import TimmBackbone, timm_classifier

__all__ = ["available_networks", "network_config", "make_backbone", "make_classifier", "make_resnet_stage",
           "Network", "network"]


class Network(NamedTuple):
    make: Callable[..., ResNet]  # (num_classes, **options) -> the network
    cls: Type[ResNet]
    block: type
    layers: Sequence[int]
    plain: bool
    shortcut: str  # what "auto" means for it


_NETWORKS: Dict[str, Network] = {}
for _d, (_block, _layers) in RESNET_LAYERS.items():
    for _plain, _prefix in ((False, "resnet"), (True, "plain")):
        _NETWORKS[f"{_prefix}{_d}"] = Network(partial(ResNet, _block, _layers, plain=_plain), ResNet,
                                              _block, _layers, _plain, "B")
for _depths, _plain, _prefix in ((CIFAR_DEPTHS, False, "cifar_resnet"), (CIFAR_PLAIN_DEPTHS, True, "cifar_plain")):
    for _d in _depths:
        _NETWORKS[f"{_prefix}{_d}"] = Network(partial(CifarResNet, _d, plain=_plain), CifarResNet,
                                              BasicBlock, cifar_layers(_d), _plain, "A")


def available_networks() -> List[str]:
    """Our own network names; any ``timm:<model>`` is accepted besides.

    >>> "resnet50" in available_networks() and "cifar_resnet110" in available_networks()
    True
    """
    return list(_NETWORKS)


def network(name: str) -> Network:
    if name in _NETWORKS:
        return _NETWORKS[name]
    if timm_model_name(name) is not None:
        raise ValueError(f"{name}: a timm model, not one of our ResNets")
    close = difflib.get_close_matches(name, list(_NETWORKS), n=4, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"valid: {', '.join(_NETWORKS)}"
    raise ValueError(f"unknown network '{name}' ({hint}; or timm:<model> for any timm model)")


def network_config(cfg: Union[BackboneConfig, str], overrides: dict) -> BackboneConfig:
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


def _resnet_options(cfg: BackboneConfig, net: Network) -> dict:
    return dict(norm=cfg.norm, freeze_at=cfg.freeze_at, stride_in_1x1=cfg.stride_in_1x1,
                shortcut=net.shortcut if cfg.shortcut == "auto" else cfg.shortcut,
                dilation=list(cfg.dilation), zero_init_residual=cfg.zero_init_residual, width=cfg.width)


# Fields that only our ResNets understand, at the values that ask for nothing special.
_TIMM_NEUTRAL = {"stride_in_1x1": (False,), "shortcut": ("auto", "B"), "zero_init_residual": (False,),
                 "width": (None,)}
# timm's classifiers are timm's own networks: they take none of the backbone options either.
_TIMM_CLASSIFIER_NEUTRAL = dict(_TIMM_NEUTRAL, norm=("BN",), freeze_at=(0,), dilation=([1, 1],))


def _check_timm(cfg: BackboneConfig, neutral: dict) -> str:
    for key, value_set in neutral.items():
        value = getattr(cfg, key)
        if (list(value) if key == "dilation" else value) not in value_set:
            raise ValueError(f"{cfg.name}: option {key}={value!r} applies to our ResNets, not to timm models")
    return timm_model_name(cfg.name)


def make_backbone(cfg: BackboneConfig, fpn: Optional[FPNOptions] = None) -> Backbone:
    """The feature extractor of the validated ``cfg`` (optionally under an FPN), random weights."""
    out_features = list(fpn.in_features) if fpn else cfg.out_features
    timm_name = timm_model_name(cfg.name)
    if timm_name is not None:
        _check_timm(cfg, _TIMM_NEUTRAL)
        model = TimmBackbone(timm_name, out_features=out_features, norm=cfg.norm, freeze_at=cfg.freeze_at,
                             dilation=cfg.dilation)
    else:
        net = network(cfg.name)
        model = net.make(None, out_features=out_features, **_resnet_options(cfg, net))
    return FPN(model, **dataclasses.asdict(fpn)) if fpn else model


def make_classifier(cfg: BackboneConfig, num_classes: int) -> nn.Module:
    """The classifier of the validated ``cfg`` (timm's own for ``timm:<model>``), random weights."""
    timm_name = timm_model_name(cfg.name)
    if timm_name is not None:
        return timm_classifier(_check_timm(cfg, _TIMM_CLASSIFIER_NEUTRAL), num_classes)
    net = network(cfg.name)
    return net.make(num_classes, **_resnet_options(cfg, net))


def make_resnet_stage(cfg: BackboneConfig, stage: str) -> nn.Sequential:
    """Stage ``stage`` of the validated ResNet ``cfg``, alone, random weights."""
    net = network(cfg.name)
    return net.cls.build_stage(net.block, net.layers, stage, plain=net.plain, **_resnet_options(cfg, net))
