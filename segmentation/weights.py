"""Whole-model weights for semantic segmentation: reskit checkpoints, converted torchvision models.

A reskit checkpoint keeps its weights under ``"model"`` and its label space and input normalisation
under ``"meta"``; a bare state dict with our (= torchvision's) names loads too, e.g. torchvision's
``fcn_resnet50`` file, whose normalisation is torchvision's, the models' default.
"""
from __future__ import annotations

from torch import nn

from detection.weights import DetectorLoadReport, checkpoint_state, match_state, read_checkpoint
from engine.data import DataError

__all__ = ["load_segmentation_weights", "checkpoint_meta"]


def checkpoint_meta(path: str) -> dict:
    """The ``meta`` a checkpoint records ({} when it has none)."""
    meta = read_checkpoint(path).get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def load_segmentation_weights(model: nn.Module, path: str, strict: bool = False,
                              prefer_ema: bool = False) -> DetectorLoadReport:
    """Load ``path`` into ``model`` and return what happened.

    Fine-tuning (``strict=False``): tensors whose shape differs (a head for another number of
    classes) and keys the model lacks are skipped and listed in the report. ``strict=True``
    (evaluation): any difference is a DataError naming the key. The checkpoint's recorded
    ``input_norm`` becomes the model's.
    """
    ckpt = read_checkpoint(path)
    usable, report = match_state(checkpoint_state(ckpt, prefer_ema), model, path)
    # the auxiliary head only trains: a checkpoint that has one evaluates fine without it
    unexpected = [k for k in report.unexpected if not k.startswith("aux_classifier.")]
    if strict and (report.missing or unexpected or report.mismatched):
        problems = [f"{len(report.missing)} missing (e.g. {report.missing[:2]})" if report.missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
                    "shape mismatch: " + ", ".join(f"{k} model {a} file {b}" for k, a, b in report.mismatched[:2])
                    if report.mismatched else ""]
        raise DataError(f"{path}: weights do not fit the model: {'; '.join(p for p in problems if p)}; "
                        "check model.head, model.num_classes, model.aux_loss and model.backbone")
    model.load_state_dict(usable, strict=False)
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    if isinstance(meta.get("input_norm"), dict) and hasattr(model, "input_norm"):
        model.input_norm = dict(meta["input_norm"])
    return report
