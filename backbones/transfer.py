"""Writing a reskit backbone checkpoint from any source: classification weights -> the backbone
weights that detection and segmentation configs take.

This module writes; :mod:`backbones.weights` reads and loads. ``transfer_weights(src, out)`` reads a
classification checkpoint of ours or a foreign weights file (torchvision state dict, timm
checkpoint, safetensors, Detectron MSRA ``.pkl``), keeps the feature extractor (the ``fc`` head and
wrapper prefixes go), loads it into a freshly built backbone of the architecture (named, recorded in
the checkpoint, or inferred from the keys) to prove that every tensor fits, and writes::

    {"model": backbone state dict, "meta": {"task": KIND_BACKBONE, "input_norm": ...,
     "backbone": {"name": ..., "options": {...}}, "source": SRC, "format": ...}}

Whole detectors and segmentation models convert in their own packages (``detection.weights``,
``segmentation.weights``); ``tools/transfer.py`` chooses between them and this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from engine.checkpoint import (KIND_BACKBONE, LoadReport, checkpoint_kind, checkpoint_meta, checkpoint_state,
                               save_checkpoint)

from .networks import make_backbone, network_config
from .cifar import CIFAR_DEPTHS
from .norm import TORCHVISION_INPUT_NORM, check_input_norm
from .resnet import RESNET_LAYERS
from .weights import FORMATS, WeightsFile, convert_state_dict, load_weights, read_weights, to_backbone_state_dict

__all__ = ["infer_resnet_name", "TransferResult", "transfer_weights", "ARCH_OPTIONS"]

# Options that change which tensors a network has or what they mean; the others (freeze_at,
# dilation, out_features, ...) are choices of the task that uses the backbone.
ARCH_OPTIONS = ("shortcut", "stride_in_1x1", "norm", "width")


@dataclass
class Converted:
    """One source as transfer_weights checks it: the feature extractor's tensors and what is known of them."""

    state: Dict[str, torch.Tensor]  # feature extractor only, our (torchvision's) names
    input_norm: dict
    format: str  # what the source was, for the record: "torchvision", "reskit classification (model_ema)", ...
    name: Optional[str] = None  # architecture, when the source states it
    options: dict = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)  # source tensors that are not the feature extractor's


def _dropped(full: Mapping[str, torch.Tensor], kept: Mapping[str, torch.Tensor]) -> List[str]:
    """Keys of ``full`` with no counterpart in ``kept`` (which may have lost a wrapper prefix)."""
    suffixes = {"." + k for k in kept}
    return [k for k in full if k not in kept and not any(k.endswith(s) for s in suffixes)]


def _is_reskit(obj, fmt: str) -> bool:
    """Our checkpoints keep the weights under "model" (timm's under "state_dict", torchvision's bare)."""
    return fmt in ("auto", "reskit") and isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)


def _arch_options(options: Mapping) -> dict:
    out = {k: options[k] for k in ARCH_OPTIONS if k in options and not (k == "width" and options[k] is None)}
    if out.get("norm") in ("SyncBN", "FrozenBN"):  # same tensors as BN; the user of the backbone chooses
        out["norm"] = "BN"
    return out


def _from_reskit(obj, fmt: str) -> Converted:
    """Our classification checkpoints (the EMA weights when the run kept them: those were evaluated)
    and backbone checkpoints written by this module."""
    meta = checkpoint_meta(obj)
    ema = isinstance(obj.get("model_ema"), Mapping) and bool(obj["model_ema"])
    weights = checkpoint_state(obj, prefer_ema=True)
    state, input_norm = to_backbone_state_dict({"model": weights, "meta": meta}, "reskit")
    backbone = meta.get("backbone") if isinstance(meta.get("backbone"), Mapping) else {}
    if isinstance(meta.get("backbone"), str):  # detection / segmentation meta name it; the run's config
        run = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}  # has its options (width...)
        model = run.get("model") if isinstance(run.get("model"), Mapping) else {}
        options = model.get("backbone") if isinstance(model.get("backbone"), Mapping) else {}
        backbone = {"name": meta["backbone"], "options": options}
    kind = checkpoint_kind(obj) or "checkpoint"
    return Converted(state, input_norm, f"reskit {kind}" + (" (model_ema)" if ema else ""),
                     backbone.get("name"), _arch_options(backbone.get("options") or {}), _dropped(weights, state))


def _from_foreign(read: WeightsFile, fmt: str) -> Converted:
    """torchvision / timm / safetensors / MSRA: whatever :mod:`backbones.weights` reads."""
    full, input_norm, found = convert_state_dict(read, fmt)
    state, _ = to_backbone_state_dict(full, "torchvision")  # drop fc and wrapper prefixes
    found = "torchvision" if found == "auto" else found
    options = {"stride_in_1x1": True} if found == "msra" else {}
    stem = state.get("conv1.weight")
    if stem is not None and stem.ndim == 4 and stem.shape[-1] == 7 and stem.shape[0] != 64:
        options["width"] = int(stem.shape[0])  # an ImageNet ResNet's stem is as wide as its first stage
    return Converted(state, input_norm or dict(TORCHVISION_INPUT_NORM), found, None, options, _dropped(full, state))


def infer_resnet_name(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``resnet18``..``resnet152`` or ``cifar_resnet20``.. from the blocks in the keys; None when the
    keys are not a ResNet's. Shortcut A (no projection tensors) is indistinguishable from a plain
    network, so a plain net must be named (``--name plain34``)."""
    blocks: Dict[int, set] = {}
    bottleneck = False
    for k in state:
        parts = k.split(".")
        if len(parts) > 2 and parts[0].startswith("layer") and parts[0][5:].isdigit() and parts[1].isdigit():
            blocks.setdefault(int(parts[0][5:]), set()).add(int(parts[1]))
            bottleneck |= parts[2] == "conv3"
    if not blocks or "conv1.weight" not in state:
        return None
    depths = [len(blocks.get(i, ())) for i in range(1, max(blocks) + 1)]
    if len(depths) == 3 and tuple(state["conv1.weight"].shape[-2:]) == (3, 3) and len(set(depths)) == 1:
        depth = 6 * depths[0] + 2
        return f"cifar_resnet{depth}" if depth in CIFAR_DEPTHS else None
    for depth, (block, layers) in RESNET_LAYERS.items():
        if list(layers) == depths and (block.expansion == 4) == bottleneck:
            return f"resnet{depth}"
    return None


@dataclass
class TransferResult:
    out: Optional[str]
    name: str
    options: dict
    report: LoadReport
    meta: dict
    backbone: nn.Module
    dropped: List[str] = field(default_factory=list)  # source tensors left out (classifier head, ...)

    @property
    def complete(self) -> bool:
        return self.report.complete


def transfer_weights(src: "str | WeightsFile", out: Optional[str], format: str = "auto", name: Optional[str] = None,
                     options: Optional[dict] = None, allow_partial: bool = False) -> TransferResult:
    """Convert ``src`` (a path, or the :class:`~backbones.weights.WeightsFile` already read from it)
    into backbone weights at ``out`` (None: check only, write nothing).

    ``name`` / ``options`` override what the source states or the keys imply. Raises ValueError when
    the architecture cannot be told, or when the weights leave backbone tensors missing or of another
    shape (unless ``allow_partial``); nothing is written then.
    """
    if format not in FORMATS:
        raise ValueError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")
    read = read_weights(src)
    source_name = read.name
    fmt = read.format if format == "auto" and read.format else format
    converted = _from_reskit(read.content, fmt) if _is_reskit(read.content, fmt) else _from_foreign(read, fmt)

    arch = name or converted.name or infer_resnet_name(converted.state)
    if arch is None:
        raise ValueError(f"{source_name}: cannot tell the architecture from its keys; name it, e.g. "
                         "--name resnet50 or --name timm:convnext_tiny")
    arch_options = dict(converted.options, **(options or {}))
    try:
        backbone = make_backbone(network_config(arch, arch_options))
    except ValueError as e:
        raise ValueError(f"cannot build backbone '{arch}' with {arch_options}: {e}") from None
    input_norm = check_input_norm(converted.input_norm or TORCHVISION_INPUT_NORM)
    try:
        report = load_weights(backbone, {"model": converted.state, "meta": {"input_norm": input_norm}},
                              format="reskit", strict_shapes=False)
    except ValueError as e:
        raise ValueError(f"{source_name}: {e}") from None
    report.source, report.format = source_name, converted.format
    meta = {"task": KIND_BACKBONE, "input_norm": input_norm, "backbone": {"name": arch, "options": arch_options},
            "source": os.path.abspath(read.path) if read.path else source_name,
            "format": converted.format}
    result = TransferResult(out, arch, arch_options, report, meta, backbone, converted.dropped)
    if not result.complete and not allow_partial:
        raise ValueError(f"{source_name}: the weights do not fill backbone '{arch}' {arch_options}:\n{report}\n"
                         "check --name and the options (e.g. stride_in_1x1 for MSRA weights); nothing written")
    if out:
        # The freshly loaded backbone's own state dict: its names are exactly what a backbone of this
        # architecture expects, and nothing but the feature extractor is in it.
        save_checkpoint(out, {"model": backbone.state_dict(), "meta": meta})
    return result
