"""Whole-model weights for semantic segmentation: load reskit checkpoints, convert torchvision models.

A reskit checkpoint keeps its weights under ``"model"`` and its label space and input normalisation
under ``"meta"``; a bare state dict with our (= torchvision's) names loads too, e.g. torchvision's
``fcn_resnet50`` file, whose normalisation is torchvision's, the models' default. Reading, state
selection, matching and the report are :mod:`engine.checkpoint`'s.

torchvision's semantic segmentation weights (``fcn_resnet50``, ``deeplabv3_resnet101``, ...) come
from an ``IntermediateLayerGetter`` over a ResNet with ``replace_stride_with_dilation=[False, True,
True]`` (output stride 8), a ``classifier`` (``FCNHead`` or ``DeepLabHead``) and an optional
``aux_classifier`` (``FCNHead`` on layer3). Our :class:`~segmentation.models.SemanticSegmentor`
keeps the same module names (our ResNet names its parameters as torchvision's), so the state dict
carries over key for key; what conversion adds is a check that the file is what it claims, and the
``meta`` our checkpoints record: the head, the backbone and its dilation, the 21 VOC class names and
the normalisation (torchvision's: RGB 0-1, ImageNet mean and std). Save the pair as a reskit
checkpoint ``{"model": state, "meta": meta}`` and set ``model.weights`` to it, with the config
values in ``meta["config"]``.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from backbones import TORCHVISION_INPUT_NORM
from engine.checkpoint import (KIND_SEMANTIC_SEGMENTATION, LoadReport, check_fit, checkpoint_meta,
                               checkpoint_state, match_state, read_checkpoint)
from engine.data import DataError

from .data import VOC_CLASSES

__all__ = ["load_segmentation_weights", "TORCHVISION_SEGMENTATION_ARCHS", "is_torchvision_segmentation",
           "convert_torchvision_segmentation", "detect_arch"]

REMEDY = "give a checkpoint of tools/train_seg.py, or convert torchvision weights with tools/transfer.py first"


# The class-dependent layers of each head (FCN / DeepLabV3: classifier.4, semantic FPN: classifier.predictor,
# the auxiliary FCN head: aux_classifier.4): only these may have another shape when fine-tuning.
CLASS_LAYERS = ("classifier.4", "classifier.predictor", "aux_classifier.4")


def load_segmentation_weights(model: nn.Module, path: str, strict: bool = False, prefer_ema: bool = False,
                              checkpoint: Optional[dict] = None, partial: Sequence[str] = ()) -> LoadReport:
    """Load ``path`` into ``model`` and return what happened.

    Fine-tuning (``strict=False``): tensors whose shape differs (a head for another number of
    classes) and keys the model lacks are skipped and listed in the report. ``strict=True``
    (evaluation): any difference is a DataError naming the key. The checkpoint's recorded
    ``input_norm`` becomes the model's. ``checkpoint``: the file already read, not read again.
    """
    ckpt = read_checkpoint(path, REMEDY) if checkpoint is None else checkpoint
    usable, report = match_state(checkpoint_state(ckpt, prefer_ema, path), model, path)
    # the auxiliary head only trains: a checkpoint that has one evaluates fine without it
    unexpected = [k for k in report.unexpected if not k.startswith("aux_classifier.")]
    if strict and (report.missing or unexpected or report.mismatched):
        problems = [f"{len(report.missing)} missing (e.g. {report.missing[:2]})" if report.missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
                    "shape mismatch: " + ", ".join(f"{k} model {m} file {w}" for k, w, m in report.mismatched[:2])
                    if report.mismatched else ""]
        raise DataError(f"{path}: weights do not fit the model: {'; '.join(p for p in problems if p)}; "
                        "check model.head, model.num_classes, model.aux_loss and model.backbone")
    if not strict:  # fine-tuning: the class layers may start new, names in partial (model.weights_partial) too
        check_fit(report, "model.weights", fine_tune=CLASS_LAYERS, partial=partial,
                  remedy="check model.head, model.backbone and model.aux_loss against the run that wrote it")
    model.load_state_dict(usable, strict=False)
    meta = checkpoint_meta(ckpt)
    if isinstance(meta.get("input_norm"), dict) and hasattr(model, "input_norm"):
        model.input_norm = dict(meta["input_norm"])
        report.input_norm_from_weights = True
    report.input_norm = getattr(model, "input_norm", None)
    return report


# --------------------------------------------------------------------------------------------------
# torchvision segmentation models -> reskit segmentation checkpoints
# --------------------------------------------------------------------------------------------------

# arch -> (head, backbone)
TORCHVISION_SEGMENTATION_ARCHS = {
    "fcn_resnet50": ("fcn", "resnet50"),
    "fcn_resnet101": ("fcn", "resnet101"),
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
}
_PREFIXES = ("backbone.", "classifier.", "aux_classifier.")


def _unwrap(state: Mapping) -> Dict[str, torch.Tensor]:
    if isinstance(state.get("model"), Mapping):  # a checkpoint of torchvision's references/segmentation
        state = state["model"]
    state = {str(k): v for k, v in state.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def is_torchvision_segmentation(state: Mapping) -> bool:
    """A torchvision FCN / DeepLabV3 state dict: the heads' final convolution over a ResNet's layer3."""
    state = _unwrap(state)
    return any(k.startswith("classifier.4.") for k in state) and any(k.startswith("backbone.layer3.") for k in state)


def detect_arch(state: Mapping) -> str:
    """``fcn_resnet50`` etc. from the keys: the head from ``classifier.0.convs`` (ASPP), the depth
    from the number of blocks in layer3 (6: ResNet-50, 23: ResNet-101)."""
    state = _unwrap(state)
    head = "deeplabv3" if any(k.startswith("classifier.0.convs.") for k in state) else "fcn"
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"backbone\.layer3\.(\d+)\.", k)] if m}
    depth = {6: 50, 23: 101}.get(len(blocks))
    if depth is None:
        raise ValueError(f"not a torchvision ResNet-50/101 segmentation state dict ({len(blocks)} blocks "
                         "in backbone.layer3)")
    return f"{head}_resnet{depth}"


def convert_torchvision_segmentation(state_dict: Mapping, arch: str = "auto") -> Tuple[Dict[str, torch.Tensor], dict]:
    """torchvision ``<arch>`` state dict (or a references/segmentation checkpoint holding it under
    ``"model"``) -> (our state dict, meta).

    ``meta`` holds ``task``, ``head``, ``backbone``, ``num_classes``, ``class_names`` (VOC),
    ``aux_loss``, ``input_norm`` and ``config``: the ``model.*`` values that build the matching model.
    """
    state = _unwrap(state_dict)
    if arch == "auto":
        arch = detect_arch(state)
    if arch not in TORCHVISION_SEGMENTATION_ARCHS:
        raise ValueError(f"arch '{arch}' is not one of {', '.join(TORCHVISION_SEGMENTATION_ARCHS)} (or auto)")
    head, backbone = TORCHVISION_SEGMENTATION_ARCHS[arch]
    foreign = [k for k in state if not k.startswith(_PREFIXES)]
    if foreign:
        raise ValueError(f"{arch}: keys outside backbone/classifier/aux_classifier, e.g. {foreign[:3]}; "
                         "not a torchvision segmentation state dict")
    if any(k.startswith("backbone.fc.") for k in state):
        raise ValueError(f"{arch}: backbone.fc.* present: this is a classifier, not a segmentation model")
    found = detect_arch(state)
    if found != arch:
        raise ValueError(f"the weights are {found}, not {arch}")
    if "classifier.4.weight" not in state:
        raise ValueError(f"{arch}: no classifier.4.weight (the final 1x1 convolution of both heads)")
    classes = state["classifier.4.weight"].shape[0]
    aux = any(k.startswith("aux_classifier.") for k in state)
    out = {k: v.detach().clone() for k, v in state.items()}
    class_names = list(VOC_CLASSES) if classes == len(VOC_CLASSES) else [f"class {i}" for i in range(classes)]
    meta = {
        "task": KIND_SEMANTIC_SEGMENTATION,
        "source": f"torchvision {arch}",
        "head": head,
        "backbone": backbone,
        "num_classes": int(classes),
        "class_names": class_names,
        "aux_loss": aux,
        "input_norm": dict(TORCHVISION_INPUT_NORM),
        "config": {"model.head": head, "model.backbone.name": backbone, "model.backbone.dilation": [2, 4],
                   "model.num_classes": int(classes), "model.aux_loss": aux, "model.head_norm": "BN"},
    }
    return out, meta
