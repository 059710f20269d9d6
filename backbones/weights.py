"""Reading the weights users already own and loading them into our networks, with a report.

This module reads and loads; :mod:`backbones.transfer` writes a reskit backbone checkpoint from any
source, using what is here. Formats (``format="auto"`` tells them apart by content):
  * ``torchvision``: a plain state dict (``torch.save(model.state_dict())``);
  * ``timm``: a timm checkpoint (``state_dict_ema`` preferred as timm does, else ``state_dict``);
  * ``reskit``: our checkpoints, ``{"model": state, "meta": {...}}`` (also classifier and detection
    checkpoints: the backbone is found under ``backbone.bottom_up.`` / ``backbone.`` etc.);
  * ``safetensors``: a ``.safetensors`` file;
  * ``msra``: Detectron's MSRA/Caffe ``.pkl`` (see :mod:`backbones.msra`).

Reading never executes code: torch files go through :func:`engine.checkpoint.read_checkpoint`,
pickles through a restricted unpickler. Keys are matched after removing wrapper prefixes
(``module.``, ``backbone.body.``, ...) and adding the model's own (``bottom_up.`` for an FPN),
choosing the rewrite that matches most keys; :func:`engine.checkpoint.match_state` then checks the
shapes and writes the one :class:`~engine.checkpoint.LoadReport`. A shape mismatch is an error
naming the key and both shapes unless ``strict_shapes=False``.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from engine.checkpoint import LoadReport, match_state, read_checkpoint
from engine.data import DataError

from .locate import is_weights_name
from .norm import MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM, check_input_norm
from .msra import is_msra_state, msra_to_torchvision, read_msra_pkl
from .resnet import Bottleneck, ResNet

__all__ = ["LoadReport", "WeightsFile", "load_weights", "check_backbone_fit", "MIN_LOADED_FRACTION", "read_weights", "convert_state_dict",
           "to_backbone_state_dict", "FORMATS"]

FORMATS = ("auto", "reskit", "torchvision", "timm", "safetensors", "msra")
# Wrappers a checkpoint may put around the network, most specific first.
_SOURCE_PREFIXES = ("", "module.", "model.", "backbone.", "backbone.body.", "backbone.bottom_up.", "body.",
                    "bottom_up.", "encoder.", "backbone.model.")
_NBT = "num_batches_tracked"


# --------------------------------------------------------------------------------------------------
# Reading and unwrapping
# --------------------------------------------------------------------------------------------------


class WeightsFile(NamedTuple):
    """What :func:`read_weights` found: read once, then handed to the loaders instead of the path."""

    content: object  # the dict the file holds
    name: str  # the path, or "<state dict>", for messages
    format: Optional[str]  # the format the file type implies (.pkl: msra, .safetensors), else None
    path: Optional[str] = None  # None for weights given in memory


_REMEDY = "give torchvision / timm / reskit weights (.pth), a .safetensors file or a Detectron .pkl"


def read_weights(source: Union[str, os.PathLike, Mapping, WeightsFile]) -> WeightsFile:
    """Read a weights file (or wrap weights already in memory) without running code from it."""
    if isinstance(source, WeightsFile):
        return source
    if isinstance(source, Mapping):
        return WeightsFile(source, "<state dict>", None)
    path = os.fspath(source)
    if is_weights_name(path):  # converting a name is the layer above (backbones.hub.resolve_source)
        raise ValueError(f"{path}: a weights name, not a file; resolve it first with "
                         "backbones.hub.resolve_source (build_backbone and the tasks do)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".pkl"):
        return WeightsFile(read_msra_pkl(path), path, "msra", path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return WeightsFile(load_file(path, device="cpu"), path, "safetensors", path)
    return WeightsFile(read_checkpoint(path, remedy=_REMEDY), path, None, path)


def _tensors(state: Mapping, name: str) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{name}: entry '{k}' is a {type(v).__name__}, not a tensor: not a state dict")
        out[str(k)] = v
    return out


def _unwrap(obj, name: str, format: str) -> Tuple[Dict[str, torch.Tensor], str, Optional[dict]]:
    """-> (state dict with torchvision-style names, format found, input_norm the weights state or None)."""
    if format not in FORMATS:
        raise ValueError(f"weights format '{format}' is not known; choose one of {', '.join(FORMATS)}")
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name}: expected a dict of weights, found {type(obj).__name__}")
    if format in ("auto", "msra") and ("blobs" in obj or is_msra_state(obj.keys())):
        blobs = obj.get("blobs", obj)
        return msra_to_torchvision({k: np.asarray(v) for k, v in blobs.items()}), "msra", dict(MSRA_INPUT_NORM)
    if format == "msra":
        raise ValueError(f"{name}: no Detectron names (conv1_w, res2_0_branch2a_w, ...) in this file")
    input_norm = None
    found = format
    if format in ("auto", "timm") and isinstance(obj.get("state_dict_ema"), Mapping) and obj["state_dict_ema"]:
        obj, found = obj["state_dict_ema"], "timm (state_dict_ema)"
    elif format in ("auto", "timm") and isinstance(obj.get("state_dict"), Mapping):
        obj, found = obj["state_dict"], "timm"
    elif format in ("auto", "reskit") and isinstance(obj.get("model"), Mapping):
        meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
        norm = meta.get("input_norm", obj.get("input_norm"))
        input_norm = check_input_norm(norm) if norm is not None else None
        obj, found = obj["model"], "reskit"
    elif format == "reskit":
        raise ValueError(f"{name}: a reskit checkpoint keeps its weights under 'model'; none here")
    elif format == "auto":
        found = "torchvision"
    state = _tensors(obj, name)
    if found == "torchvision":
        input_norm = dict(TORCHVISION_INPUT_NORM)
    if state and all(k.startswith("module.") for k in state):  # DistributedDataParallel's wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, found, input_norm


def convert_state_dict(source, format: str = "auto") -> Tuple[Dict[str, torch.Tensor], Optional[dict], str]:
    """Any supported weights -> (torchvision-named state dict, input_norm or None, format found)."""
    read = read_weights(source)
    state, found, input_norm = _unwrap(read.content, read.name, read.format if format == "auto" and read.format
                                       else format)
    return state, input_norm, found


def to_backbone_state_dict(source, format: str = "auto") -> Tuple[Dict[str, torch.Tensor], dict]:
    """The feature extractor's weights alone: classifier head (``fc``) and wrapper prefixes removed.

    Accepts a classifier or a detection checkpoint (``backbone.bottom_up.`` / ``backbone.body.`` /
    ``backbone.``); returns (state dict as our ResNet names it, input_norm).
    """
    state, input_norm, _ = convert_state_dict(source, format)
    for prefix in ("backbone.bottom_up.", "backbone.body.", "backbone.", "bottom_up.", "body."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "fpn."))}
    return state, input_norm or dict(TORCHVISION_INPUT_NORM)


# --------------------------------------------------------------------------------------------------
# Matching keys and loading
# --------------------------------------------------------------------------------------------------


def _model_prefixes(model_keys) -> List[str]:
    prefixes = {""}
    for k in model_keys:
        parts = k.split(".")
        for n in (1, 2):
            # a wrapper is a named module ("bottom_up.", "model."), never a position inside a stage
            if len(parts) > n + 1 and not any(p.isdigit() for p in parts[:n]):
                prefixes.add(".".join(parts[:n]) + ".")
    return sorted(prefixes, key=len)


def _flatten_aliases(model_keys) -> Dict[str, str]:
    """timm's features_only wrapper renames ``stages.0`` to ``stages_0``: accept the original names."""
    aliases: Dict[str, List[str]] = {}
    for k in model_keys:
        alias = re.sub(r"(?<=[A-Za-z])_(\d+)(?=\.)", r".\1", k)
        if alias != k:
            aliases.setdefault(alias, []).append(k)
    return {a: ks[0] for a, ks in aliases.items() if len(ks) == 1 and a not in model_keys}


def _match_keys(source_keys, model_keys) -> Tuple[Dict[str, str], List[Tuple[str, str]]]:
    """Greedy prefix rewriting: repeatedly apply the (strip, add) pair that maps most remaining keys."""
    model_set = set(model_keys)
    aliases = _flatten_aliases(model_keys)

    def resolve(key: str) -> Optional[str]:
        return key if key in model_set else aliases.get(key)

    mapping: Dict[str, str] = {}
    used = set()
    rules: List[Tuple[str, str]] = []
    remaining = [k for k in source_keys]
    adds = _model_prefixes(model_keys)
    while remaining:
        best, best_hits = None, {}
        for strip in _SOURCE_PREFIXES:
            candidates = [k for k in remaining if k.startswith(strip)]
            if not candidates:
                continue
            for add in adds:
                hits = {}
                for k in candidates:
                    target = resolve(add + k[len(strip):])
                    if target is not None and target not in used:
                        hits[k] = target
                if len(hits) > len(best_hits):
                    best, best_hits = (strip, add), hits
        if not best_hits:
            break
        mapping.update(best_hits)
        used.update(best_hits.values())
        rules.append(best)
        remaining = [k for k in remaining if k not in best_hits]
    return mapping, rules


def _check_msra_compatible(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, ResNet) and not m.stride_in_1x1 and any(isinstance(b, Bottleneck) for b in m.modules()):
            raise ValueError(f"MSRA/Detectron weights put the bottleneck stride in the first 1x1 convolution; "
                             f"build the model{' ' + name if name else ''} with stride_in_1x1=True")


def _converted_from_msra(content) -> bool:
    """A backbone checkpoint that transfer.py wrote from MSRA weights (e.g. a detectron2:// name)."""
    meta = content.get("meta") if isinstance(content, Mapping) else None
    backbone = meta.get("backbone") if isinstance(meta, Mapping) else None  # a name (str) in detection meta
    options = backbone.get("options") if isinstance(backbone, Mapping) else None
    return isinstance(options, Mapping) and options.get("stride_in_1x1") is True and meta.get("format") == "msra"


def load_weights(model: nn.Module, source, format: str = "auto", strict_shapes: bool = True) -> LoadReport:
    """Load ``source`` (a path, a :class:`WeightsFile` or a state dict / checkpoint dict) into
    ``model``; returns the report.

    Sets ``model.input_norm`` when the weights state their normalisation (torchvision, MSRA, reskit
    checkpoints that record it). ``strict_shapes=False`` skips mismatched tensors (listed in the
    report) instead of raising, e.g. to reuse an ImageNet classifier with a new number of classes.
    """
    read = read_weights(source)
    implied = read.format
    state, found, input_norm = _unwrap(read.content, read.name, implied if format == "auto" and implied else format)
    if found == "auto":
        found = implied or "torchvision"
    if found == "msra" or _converted_from_msra(read.content):
        _check_msra_compatible(model)

    mapping, rules = _match_keys(list(state), list(model.state_dict()))
    renamed = {}
    for src_key, dst_key in mapping.items():
        value = state[src_key]
        if found == "msra" and dst_key.endswith(".running_var"):
            # affine-only Caffe BN: running_var = 1 - eps of *this* module, so (Frozen)BN gives x*s+b exactly
            module = model.get_submodule(dst_key.rsplit(".", 1)[0])
            value = torch.full_like(value, 1.0 - getattr(module, "eps", 1e-5))
        renamed[dst_key] = value
    to_load, report = match_state(renamed, model, read.name, allow_mismatch=not strict_shapes,
                                  remedy="check the architecture and its options (model.backbone.name, width, "
                                         "stride_in_1x1), or load with strict_shapes=False",
                                  weights_names={d: s for s, d in mapping.items()})
    model.load_state_dict(to_load, strict=False)
    report.format, report.mapping = found, rules
    # num_batches_tracked is bookkeeping, absent from FrozenBN and from most converted weights: not reported.
    report.unexpected = [k for k in state if k not in mapping and not k.endswith(_NBT)]
    if input_norm is not None:
        model.input_norm = dict(input_norm)
        report.input_norm_from_weights = True
    report.input_norm = getattr(model, "input_norm", input_norm)
    return report


# Backbone weights must fill at least this share of the network's tensors (layers the task adds on
# top, e.g. an FPN, aside): a classifier of another depth, a detector's neck or a file in another
# naming scheme would otherwise leave most of the network random and train with exit 0.
MIN_LOADED_FRACTION = 0.9


def check_backbone_fit(report: Optional[LoadReport], own: Tuple[str, ...] = ("fpn.",),
                       key: str = "model.backbone.weights") -> None:
    """One line (DataError) when ``report`` filled under :data:`MIN_LOADED_FRACTION` of the
    backbone's tensors; names under ``own`` (the task's added layers) are not counted."""
    if report is None:
        return
    loaded = [k for k in report.loaded if not k.startswith(own)]
    missing = [k for k in report.missing if not k.startswith(own)]
    total = len(loaded) + len(missing) + len([k for k, _, _ in report.mismatched if not k.startswith(own)])
    if total and len(loaded) >= MIN_LOADED_FRACTION * total:
        return
    from engine.checkpoint import _summarize  # the report's own way of listing keys

    raise DataError(f"{report.source}: {key} fill {len(loaded)} of {total} backbone tensors (under "
                    f"{MIN_LOADED_FRACTION:.0%}; missing {_summarize(missing, limit=4)}; unexpected "
                    f"{_summarize(report.unexpected, limit=4)}); check model.backbone.name and its options "
                    "(stride_in_1x1, shortcut, norm) against the weights, or model.backbone.weights_format")
