"""Run a trained detector on plain images: ``Predictor(config, weights)(rgb_uint8_array)``."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from engine.checkpoint import read_checkpoint
from engine.config import load_config
from engine.hardware import autocast, choose_precision, describe_device, resolve_device

from .build import build_detector
from .config import DetConfig
from .task import DetectionTask
from .weights import REMEDY, load_detector_weights


class Predictor:
    """A detector ready for inference, with the label space of its checkpoint.

    ``predictor(image)`` takes an RGB ``uint8`` array H x W x 3 and returns a dict of numpy arrays:
    ``boxes`` (N x 4, xyxy in the input's pixels), ``scores`` (N), ``category_ids`` (N, the dataset's
    own ids) and, for Mask R-CNN, ``masks`` (N x H x W booleans). ``predictor.class_names`` maps
    ``category_ids`` to names through ``predictor.category_names``.

    ``checkpoint`` is the weights file already read (:func:`engine.checkpoint.read_checkpoint`), if it
    was. ``fast=True`` folds frozen batch norms into the convolutions and runs the backbone channels-last
    (``backbones.prepare_for_inference``); outputs stay within float tolerance of the plain model.
    ``precision``: auto | off | bf16 | fp16, default the config's ``solver.amp`` (auto: bf16 where the
    device computes it natively, else fp32; engine.hardware); ``self.precision`` says what and why.
    """

    def __init__(self, config: Union[str, DetConfig], weights: str, device: Optional[str] = None,
                 fast: bool = True, overrides=(), checkpoint: Optional[dict] = None, precision: Optional[str] = None):
        # the checkpoint holds the backbone too: its starting weights are neither read nor required
        cfg = load_config(DetConfig, config, ["model.backbone.weights=null", *overrides]) \
            if isinstance(config, str) else copy.deepcopy(config)
        cfg.model.weights = weights
        cfg.model.backbone.weights = None  # the checkpoint holds the backbone too
        ckpt = read_checkpoint(weights, REMEDY) if checkpoint is None else checkpoint  # read once
        task = DetectionTask(cfg, training=False, checkpoint=ckpt)
        self.cfg = cfg
        self.device = resolve_device(device)
        self.precision = choose_precision(precision or cfg.solver.amp, self.device)
        self.device_words = describe_device(self.device)
        model = build_detector(cfg.model, cfg.input)
        self.load_report = load_detector_weights(model, weights, allow_mismatch=False, checkpoint=ckpt)
        model.eval()
        if fast:
            from backbones import prepare_for_inference
            model.backbone = prepare_for_inference(model.backbone)
        self.model = model.to(self.device)
        c2i = task.contiguous_to_id() if task.weights_labels is not None else None
        if c2i is None:
            raise ValueError(f"{weights}: the checkpoint records no category ids (meta.category_ids); "
                             "train with tools/train_det.py or convert with tools/transfer.py")
        self._label_to_id = np.zeros(max(c2i) + 1, dtype=np.int64)
        for label, cat_id in c2i.items():
            self._label_to_id[label] = cat_id
        self.category_names: Dict[int, str] = dict(zip(task.weights_labels["category_ids"],
                                                       task.weights_labels["class_names"]))

    @torch.inference_mode()
    def predict_batch(self, images: List[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        tensors = []
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                    or image.dtype != np.uint8:
                raise ValueError(f"image {i}: expected an RGB uint8 array H x W x 3, got "
                                 f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
            tensors.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self.device))
        with autocast(self.device, self.precision):
            outputs = self.model(tensors)
        results = []
        for out in outputs:
            labels = out["labels"].cpu().numpy()
            result = {"boxes": out["boxes"].float().cpu().numpy(),
                      "scores": out["scores"].float().cpu().numpy(),
                      "category_ids": self._label_to_id[labels]}
            if "masks" in out:
                result["masks"] = (out["masks"][:, 0].float() >= 0.5).cpu().numpy()
            results.append(result)
        return results

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        return self.predict_batch([image])[0]
