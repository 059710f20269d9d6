"""How images are normalised before they enter a network, recorded with the weights.

Images enter our models as RGB (DESIGN.md); each weights format states its own normalisation as a
dict ``{"color": "RGB"|"BGR", "scale": 1|255, "mean": [3], "std": [3]}``: pixels are first brought
to ``[0, scale]``, channels reordered to ``color``, then ``(x - mean) / std`` per channel (mean and
std in the same units and channel order). :func:`normalize_image` applies it in one place.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

__all__ = ["TORCHVISION_INPUT_NORM", "MSRA_INPUT_NORM", "normalize_image", "rgb01_mean_std", "check_input_norm"]

# torchvision and timm ImageNet weights: RGB in [0, 1], ImageNet statistics.
TORCHVISION_INPUT_NORM = {"color": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# The original MSRA / Caffe ResNets (as converted by Detectron): BGR in [0, 255] minus the mean pixel, std 1.
MSRA_INPUT_NORM = {"color": "BGR", "scale": 255.0, "mean": [103.53, 116.28, 123.675], "std": [1.0, 1.0, 1.0]}


def check_input_norm(norm: Dict) -> Dict:
    """Validate and return a normalised copy (floats, lists); raises ValueError naming the bad field."""
    missing = {"color", "scale", "mean", "std"} - set(norm)
    if missing:
        raise ValueError(f"input_norm lacks {sorted(missing)}: expected color, scale, mean, std")
    if norm["color"] not in ("RGB", "BGR"):
        raise ValueError(f"input_norm color must be RGB or BGR, got {norm['color']!r}")
    mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"input_norm mean and std need 3 values, got {mean} and {std}")
    return {"color": norm["color"], "scale": float(norm["scale"]), "mean": mean, "std": std}


def rgb01_mean_std(norm: Dict) -> Tuple[list, list]:
    """(mean, std) for RGB images in [0, 1], as torchvision's GeneralizedRCNNTransform expects.

    ``(scale*x - m) / s == (x - m/scale) / (s/scale)``, so scale folds into mean and std; for BGR
    weights the values are returned in RGB order, and the caller must still feed BGR (or flip the
    first convolution's input channels) — :func:`normalize_image` does the flip itself.
    """
    norm = check_input_norm(norm)
    mean = [m / norm["scale"] for m in norm["mean"]]
    std = [s / norm["scale"] for s in norm["std"]]
    if norm["color"] == "BGR":
        mean, std = mean[::-1], std[::-1]
    return mean, std


def normalize_image(images: torch.Tensor, norm: Dict) -> torch.Tensor:
    """RGB float images in [0, 1] (N,3,H,W or 3,H,W) -> the network's input for weights of ``norm``."""
    norm = check_input_norm(norm)
    x = images * norm["scale"] if norm["scale"] != 1.0 else images
    if norm["color"] == "BGR":
        x = x.flip(-3)
    shape = (3, 1, 1)
    mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device).view(shape)
    return (x - mean) / std
