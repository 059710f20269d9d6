"""Pretrained weights by name, converted once into reskit backbone checkpoints (docs/weights.md).

    torchvision:ResNet50_Weights.IMAGENET1K_V2       any torchvision weight enum
    timm:resnet50.a1_in1k                             timm's pretrained_cfg: Hugging Face hub, else its URL
    detectron2://ImageNetPretrained/MSRA/R-50.pkl     detectron2's URL prefix on dl.fbaipublicfiles.com

A name is accepted wherever a backbone weights file is (``model.backbone.weights``, ``tools/transfer.py``).
:func:`resolve_weights` finds the library's file (:mod:`backbones.locate`: the libraries' own caches,
a download when allowed), converts it once with :func:`backbones.transfer.transfer_weights` into a
reskit backbone checkpoint and caches that under ``cache_dir()/converted/``; the next run reads the
converted file directly.

Weights by name sit above reading and converting files, with one way down (docs/ARCHITECTURE.md):
``build -> hub -> transfer -> networks, weights``; ``hub -> locate``. Nothing below imports this module.
"""
from __future__ import annotations

import logging
import os
import re

from engine.checkpoint import save_checkpoint
from engine.data import DataError

from .locate import cache_dir, fetch, is_weights_name, locate
from .transfer import infer_resnet_name, transfer_weights
from .weights import read_weights, to_backbone_state_dict

__all__ = ["resolve_weights", "resolve_source"]


def _converted_path(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return os.path.join(cache_dir(), "converted", safe + ".pth")


def resolve_weights(name: str, log=None) -> str:
    """The reskit backbone checkpoint for ``name``: converted from the library's file the first time
    (:func:`backbones.transfer.transfer_weights`, every backbone tensor checked), then read from the
    cache. ``log(message)`` is told what was done (default: the ``backbones.hub`` logger)."""
    say = log or logging.getLogger(__name__).info
    out = _converted_path(name)
    located = locate(name)
    if os.path.isfile(out) and (located.path is None or os.path.getmtime(out) >= os.path.getmtime(located.path)):
        return out
    source = fetch(located)
    read = read_weights(source)
    arch = None
    if located.arch:  # timm: our ResNet when the keys are a ResNet's (timm's ResNets use torchvision's names)
        arch = infer_resnet_name(to_backbone_state_dict(read)[0]) or located.arch
    try:
        result = transfer_weights(read, None, name=arch)
    except ValueError as e:
        raise DataError(f"{name} ({source}): {e}".splitlines()[0]) from None
    meta = dict(result.meta, source=name, file=os.path.abspath(source))
    if located.input_norm:
        meta["input_norm"] = located.input_norm
    save_checkpoint(out, {"model": result.backbone.state_dict(), "meta": meta})
    dropped = f", {len(result.dropped)} tensors not the backbone's left out" if result.dropped else ""
    say(f"{name}: {source} converted to {out} ({result.name} {result.options or ''}".rstrip()
        + f"{dropped})")
    return out


def resolve_source(source):
    """``source`` with a weights name replaced by its converted file; paths, dicts and
    :class:`~backbones.weights.WeightsFile` pass unchanged (what every loader of backbone weights takes)."""
    return resolve_weights(source) if is_weights_name(source) else source
