"""A classifier to ONNX or ``torch.export``, checked against the eager model (docs/deploy.md).

The graph takes the task's centre view as the predictor makes it, RGB float 0-1 N x 3 x h x w (N, h
and w dynamic), applies the weights' normalisation inside and returns the logits N x C. The resize and
crop stay outside (the metadata give the sizes): they are image decoding, not the network.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from backbones.norm import normalize_image
from engine.export import check_close, export_onnx, export_program, run_exported

__all__ = ["ClassifierGraph", "export_classifier", "verify_classifier"]


class ClassifierGraph(nn.Module):
    def __init__(self, model: nn.Module, input_norm: dict):
        super().__init__()
        self.model = model
        self.input_norm = dict(input_norm)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(normalize_image(images, self.input_norm))


def _metadata(predictor) -> dict:
    data = predictor.cfg.data
    return {"reskit.task": "classification", "reskit.backbone": predictor.cfg.model.backbone.name,
            "reskit.input": "RGB float 0-1, N x 3 x crop x crop (shorter side resized to resize_size, centre crop)",
            "reskit.input_norm": predictor.input_norm, "reskit.resize_size": data.resize_size,
            "reskit.crop_size": data.crop_size, "reskit.class_names": predictor.class_names}


def _samples(predictor, n: int = 2) -> Tensor:
    g = torch.Generator().manual_seed(0)
    size = predictor.cfg.data.crop_size
    return torch.rand(n, 3, size, size, generator=g)


def export_classifier(predictor, path: str, fmt: str, atol: float = 1e-5) -> List[dict]:
    """Write ``predictor``'s network (a :class:`~classification.predictor.ClassificationPredictor`) as
    ``fmt`` (onnx | torch-export) to ``path`` and check it; returns the check's rows."""
    graph = ClassifierGraph(predictor.model, predictor.input_norm).cpu().eval()
    example = _samples(predictor)
    if fmt == "onnx":
        export_onnx(graph, [example], path, ["images"], ["logits"],
                    {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}, _metadata(predictor))
    else:
        batch = torch.export.Dim("batch", min=1, max=1024)
        export_program(graph, [example], path, dynamic_shapes=({0: batch},), metadata=_metadata(predictor))
    return verify_classifier(graph, path, fmt, example, atol)


def verify_classifier(graph: nn.Module, path: str, fmt: str, example: Tensor, atol: float = 1e-5) -> List[dict]:
    rows = []
    for images in (example, torch.rand(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))):
        with torch.no_grad():
            expected = graph(images).numpy()
        got = run_exported(path, fmt, images)
        rows.append({"batch": len(images), "max_abs_diff": check_close(f"{path}: logits", expected, got, atol=atol)})
    return rows
