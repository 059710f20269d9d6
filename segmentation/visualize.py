"""Drawing semantic label maps: a PASCAL VOC palette, colourised maps and overlays on the image."""
from __future__ import annotations

from typing import Optional, Sequence

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
            ignore_index: int = 255, background: int = 0, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """``image`` (RGB uint8 [H, W, 3]) with the class colours blended in at ``alpha``; background and
    ignored pixels keep the image as it is. With ``names`` (one per label) each predicted region is
    also outlined and labelled with its class name: a blend alone cannot be told from the object's own
    colour on flat-coloured objects."""
    image = np.asarray(image)
    labels = np.asarray(label_map)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label map {labels.shape} and image {image.shape[:2]} differ in size")
    colours = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = (labels != background) & (labels != ignore_index)
    out = image.astype(np.float32)
    out[blend] = (1 - alpha) * out[blend] + alpha * colours[blend]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if names is not None:
        out = _outline_regions(out, labels, names, palette, ignore_index, background)
    return out


def _outline_regions(image: np.ndarray, labels: np.ndarray, names: Sequence[str], palette: Optional[np.ndarray],
                     ignore_index: int, background: int) -> np.ndarray:
    import cv2

    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    out = np.ascontiguousarray(image)
    for label in np.unique(labels):
        if label in (background, ignore_index) or not 0 <= label < len(palette):
            continue
        colour = tuple(int(v) for v in np.maximum(palette[label], 64))  # dark palette colours stay visible
        contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 1, lineType=cv2.LINE_8)
        name = names[label] if label < len(names) else str(label)
        for contour in contours:
            if cv2.contourArea(contour) < 16:
                continue
            x, y, _, _ = cv2.boundingRect(contour)
            origin = (int(x), int(max(y - 2, 8)))
            cv2.putText(out, name, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(out, name, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1, cv2.LINE_AA)
    return out
