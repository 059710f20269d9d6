"""Run a trained semantic segmentation model on RGB images: ``SemanticPredictor(config, weights)(image)``."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.checkpoint import checkpoint_meta, read_checkpoint
from engine.config import load_config
from engine.hardware import autocast, choose_precision, resolve_device

from .config import SegConfig
from .models import build_segmentation_model
from .weights import REMEDY, load_segmentation_weights

__all__ = ["SemanticPredictor"]


class SemanticPredictor:
    """Loads ``weights`` (a reskit segmentation checkpoint) into the model of ``config`` and predicts;
    ``checkpoint`` is that file already read (:func:`engine.checkpoint.read_checkpoint`), if it was.

    ``predictor(image)`` takes an RGB uint8 array [H, W, 3] and returns the label map int64 [H, W] at
    the image's own size: the image is resized to short side ``data.base_size`` when the config
    evaluates that way (``data.eval_resize``), and the logits are resized back before the argmax.
    ``class_names`` come from the checkpoint when it records them.
    """

    def __init__(self, config: str, weights: str, device: Optional[str] = None, overrides: Sequence[str] = (),
                 checkpoint: Optional[dict] = None, precision: Optional[str] = None):
        # the backbone file is not needed: the checkpoint holds every weight
        self.cfg = load_config(SegConfig, config, ["model.backbone.weights=null", *overrides])
        self.device = resolve_device(device)
        self.precision = choose_precision(precision or self.cfg.solver.amp, self.device)  # auto | off | bf16 | fp16 (engine.hardware)
        model = build_segmentation_model(self.cfg.model)
        ckpt = read_checkpoint(weights, REMEDY) if checkpoint is None else checkpoint  # read once
        self.load_report = load_segmentation_weights(model, weights, strict=True, checkpoint=ckpt)
        self.model = model.to(self.device).eval()
        meta = checkpoint_meta(ckpt)
        self.class_names = list(meta.get("class_names") or self.cfg.data.class_names or
                                [f"class {i}" for i in range(self.cfg.model.num_classes)])
        self.short_side = self.cfg.data.base_size if self.cfg.data.eval_resize else None

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if self.short_side:
            scale = self.short_side / min(height, width)
            size = (int(width * scale + 0.5), int(height * scale + 0.5))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device)
        with autocast(self.device, self.precision):
            logits = self.model(batch)["out"]
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].cpu().numpy()
