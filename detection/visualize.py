"""Draw detections (boxes, class names, scores, instance masks) on an image with OpenCV."""
from __future__ import annotations

from typing import Dict, Optional

import cv2
import numpy as np


def instance_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` well-separated RGB colours (golden-ratio hues), the same for the same ``n``."""
    if n == 0:
        return np.zeros((0, 3), dtype=np.int32)
    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 255)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.int32)


def draw_detections(image: np.ndarray, prediction: Dict[str, np.ndarray],
                    category_names: Optional[Dict[int, str]] = None, score_thresh: float = 0.5,
                    mask_alpha: float = 0.45) -> np.ndarray:
    """A copy of the RGB ``image`` with the predictions above ``score_thresh`` drawn on it."""
    canvas = image.copy()
    keep = prediction["scores"] >= score_thresh
    boxes = prediction["boxes"][keep]
    scores = prediction["scores"][keep]
    ids = prediction["category_ids"][keep]
    masks = prediction["masks"][keep] if "masks" in prediction else None
    colors = instance_colors(len(boxes))
    if masks is not None:
        for mask, color in zip(masks, colors):
            region = canvas[mask].astype(np.float32)
            canvas[mask] = (region * (1 - mask_alpha) + color * mask_alpha).astype(np.uint8)
    scale = max(0.35, min(canvas.shape[:2]) / 800)
    thickness = max(1, int(round(scale * 2)))
    for box, score, cat, color in zip(boxes, scores, ids, colors):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        c = tuple(int(v) for v in color)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), c, thickness)
        name = (category_names or {}).get(int(cat), str(int(cat)))
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.5, 1)
        ty = max(th + base, y1)
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), c, -1)
        cv2.putText(canvas, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_rgb(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image (check the folder exists and is writable)")
