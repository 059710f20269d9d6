"""Drawing semantic label maps: a PASCAL VOC palette, colourised maps and overlays on the image."""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["voc_palette", "colorize", "overlay"]


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map [num_colors, 3] uint8 (the bits of the label spread over R, G, B), as
    in the VOC development kit: 0 black, 1 dark red, 2 dark green, ..."""
    palette = np.zeros((num_colors, 3), np.uint8)
    for label in range(num_colors):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


def colorize(label_map: np.ndarray, palette: Optional[np.ndarray] = None, ignore_index: int = 255) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a label map [H, W]; ``ignore_index`` (and labels past the palette) black."""
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    labels = np.asarray(label_map).astype(np.int64)
    out = np.zeros(labels.shape + (3,), np.uint8)
    drawable = (labels >= 0) & (labels < len(palette)) & (labels != ignore_index)
    out[drawable] = palette[labels[drawable]]
    return out


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.5, palette: Optional[np.ndarray] = None,
            ignore_index: int = 255, background: int = 0) -> np.ndarray:
    """``image`` (RGB uint8 [H, W, 3]) with the class colours blended in at ``alpha``; background and
    ignored pixels keep the image as it is."""
    image = np.asarray(image)
    labels = np.asarray(label_map)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label map {labels.shape} and image {image.shape[:2]} differ in size")
    colours = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = (labels != background) & (labels != ignore_index)
    out = image.astype(np.float32)
    out[blend] = (1 - alpha) * out[blend] + alpha * colours[blend]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
