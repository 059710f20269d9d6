"""A semantic segmentation model to ONNX or ``torch.export``, checked against the eager model
(docs/deploy.md).

The graph takes what the model takes, RGB uint8 N x 3 x H x W (N, H, W dynamic), normalises inside
and returns the logits N x C x H x W at the input's size. The predictor's resize to
``data.base_size`` (when the config evaluates that way) and the argmax stay outside; the metadata
give the size and the class names.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from engine.export import check_close, export_onnx, export_program, run_exported

__all__ = ["SemanticGraph", "export_semantic"]


class SemanticGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)["out"]


def export_semantic(predictor, path: str, fmt: str, size=(256, 320), atol: float = 1e-5) -> List[dict]:
    """Write ``predictor``'s model (a :class:`~segmentation.predictor.SemanticPredictor`) as ``fmt``
    (onnx | torch-export) to ``path`` and check the logits at two sizes; returns the check's rows."""
    graph = SemanticGraph(predictor.model).cpu().eval()
    g = torch.Generator().manual_seed(0)
    h, w = size
    example = torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8)
    meta = {"reskit.task": "semantic_segmentation", "reskit.input": "RGB uint8 N x 3 x H x W",
            "reskit.input_norm": predictor.model.input_norm, "reskit.short_side": predictor.short_side,
            "reskit.class_names": predictor.class_names}
    if fmt == "onnx":
        export_onnx(graph, [example], path, ["images"], ["logits"],
                    {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
                    meta)
    else:
        export_program(graph, [example], path, metadata=meta)
    rows = []
    others = [example] + ([torch.randint(0, 256, (1, 3, h - 32, w + 32), generator=g, dtype=torch.uint8)]
                          if fmt == "onnx" else [])
    for images in others:
        with torch.no_grad():
            expected = graph(images).numpy()
        got = run_exported(path, fmt, images)
        rows.append({"size": list(images.shape[-2:]),
                     "max_abs_diff": check_close(f"{path}: logits", expected, got, atol=atol)})
    return rows
