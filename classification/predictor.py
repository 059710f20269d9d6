"""Run a trained classifier on RGB images: ``ClassificationPredictor(config, weights)(image)``."""
from __future__ import annotations

import copy
import dataclasses
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from backbones.build import build_classifier
from backbones.norm import TORCHVISION_INPUT_NORM, check_input_norm, normalize_image
from backbones.weights import load_weights
from engine.checkpoint import KIND_CLASSIFICATION, checkpoint_kind, checkpoint_meta, checkpoint_state, read_checkpoint
from engine.config import load_config
from engine.hardware import autocast, choose_precision, resolve_device
from engine.image_io import check_rgb_images

from .config import ClsConfig
from .evaluation import center_scores
from .transforms import build_eval_transform

__all__ = ["ClassificationPredictor"]

Prediction = Dict[str, Union[np.ndarray, List[str]]]


def _config_from_meta(meta: dict, weights: str) -> ClsConfig:
    """The parts of a ClsConfig a prediction needs, from what a classification checkpoint records
    (:meth:`classification.task.ClassificationTask.checkpoint_meta`)."""
    cfg = ClsConfig()
    backbone = meta.get("backbone") or {}
    if not backbone.get("name"):
        raise ValueError(f"{weights}: the checkpoint records no backbone (meta.backbone); give the run's config")
    cfg.model.backbone = dataclasses.replace(cfg.model.backbone, name=backbone["name"], **backbone.get("options", {}))
    cfg.model.num_classes = int(meta.get("num_classes") or len(meta.get("class_names") or ()))
    view = meta.get("eval") or {}
    cfg.data.resize_size = int(view.get("resize_size", cfg.data.resize_size))
    cfg.data.crop_size = int(view.get("crop_size", cfg.data.crop_size))
    return cfg


class ClassificationPredictor:
    """A classifier ready for inference, with the class names and input normalisation of its checkpoint.

    ``weights`` is a checkpoint of ``tools/train_cls.py`` (``meta.task == "classification"``): its EMA
    weights when the run kept them (what its evaluation used), else its weights. ``config`` is the
    run's config (a path, with ``overrides``, or a ClsConfig) or None: then the network and the
    evaluation view come from the checkpoint's ``meta`` (backbone, num_classes, eval sizes).

    ``predictor(image)`` takes an RGB ``uint8`` array H x W x 3 (or a list of them) and returns, per
    image, the ``topk`` best classes: ``labels`` int64 [k] (class indices), ``scores`` float32 [k]
    (softmax probabilities, best first) and ``class_names`` [k]. The image goes through the task's
    centre view: shorter side resized to ``data.resize_size``, centre ``data.crop_size`` crop, the
    weights' normalisation (:func:`classification.transforms.build_eval_transform`, as evaluation).
    """

    def __init__(self, config: Union[str, ClsConfig, None], weights: str, device: Optional[str] = None,
                 topk: int = 5, overrides: Sequence[str] = (), precision: Optional[str] = None):
        ckpt = read_checkpoint(weights)
        meta = checkpoint_meta(ckpt)
        if checkpoint_kind(ckpt) != KIND_CLASSIFICATION or not isinstance(ckpt.get("model"), dict):
            raise ValueError(f"{weights}: not a classification checkpoint (meta.task is {meta.get('task')!r}); "
                             "give a model_final.pth / model_best.pth of tools/train_cls.py")
        if config is None:
            cfg = _config_from_meta(meta, weights)
        elif isinstance(config, str):
            cfg = load_config(ClsConfig, config, ["model.backbone.weights=null", *overrides])
        else:
            cfg = copy.deepcopy(config)
        self.cfg = cfg
        self.class_names: List[str] = list(meta.get("class_names") or
                                           [f"class {i}" for i in range(cfg.model.num_classes)])
        if len(self.class_names) != cfg.model.num_classes:
            raise ValueError(f"{weights}: {len(self.class_names)} classes in the checkpoint, model.num_classes="
                             f"{cfg.model.num_classes} in the config")
        self.topk = max(1, min(int(topk), cfg.model.num_classes))

        model = build_classifier(dataclasses.replace(cfg.model.backbone, weights=None), cfg.model.num_classes)
        state = checkpoint_state(ckpt, prefer_ema=True, source=weights)
        self.load_report = load_weights(model, {"model": state, "meta": meta}, strict_shapes=True)
        if self.load_report.missing or self.load_report.unexpected:
            raise ValueError(f"{weights}: does not fit {cfg.model.backbone.name}: missing "
                             f"{self.load_report.missing[:3]}, unexpected {self.load_report.unexpected[:3]}")
        self.input_norm = check_input_norm(getattr(model, "input_norm", TORCHVISION_INPUT_NORM))
        self.device = resolve_device(device)
        self.precision = choose_precision(precision or cfg.solver.amp, self.device)  # auto | off | bf16 | fp16 (engine.hardware)
        self.model = model.to(self.device).eval()
        self.transform = build_eval_transform(cfg.data)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_image(images, self.input_norm)

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Prediction]:
        """The top-k of every image, in one forward pass (every view has the same crop size)."""
        check_rgb_images(images)
        if not images:
            return []
        views = [self.transform(image) for image in images]
        with autocast(self.device, self.precision):
            logits = center_scores(self.model, torch.stack(views).to(self.device), self.normalize)
        probs, labels = logits.float().softmax(dim=1).topk(self.topk, dim=1)
        probs, labels = probs.cpu().numpy(), labels.cpu().numpy()
        return [{"labels": labels[i].astype(np.int64), "scores": probs[i].astype(np.float32),
                 "class_names": [self.class_names[j] for j in labels[i]]} for i in range(len(views))]

    def __call__(self, image: Union[np.ndarray, Sequence[np.ndarray]]) -> Union[Prediction, List[Prediction]]:
        if isinstance(image, np.ndarray):
            return self.predict_batch([image])[0]
        return self.predict_batch(list(image))
