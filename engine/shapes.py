"""Drawing primitives shared by the synthetic classification set and the synthetic COCO detection set.

Every shape is a polygon (circles and ellipses with 64 vertices) filled by ``cv2.fillPoly`` at
1/16-pixel precision without anti-aliasing, so the mask returned is exactly the pixels painted.
``size`` is the diameter of the circle all vertices lie in: a shape of size s centred at least s/2
from every border stays inside the image whatever its angle. All randomness comes from the numpy
``Generator`` passed in, so a seed fixes every pixel.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["SHAPE_KINDS", "shape_polygon", "draw_shape", "random_background", "random_color"]

SHAPE_KINDS = ("circle", "square", "triangle", "star", "hexagon", "ellipse", "cross", "diamond")
_SHIFT = 4  # fillPoly fixed-point bits: vertices at 1/16 pixel


def _regular(n: int, radius: float, start_deg: float) -> np.ndarray:
    t = np.deg2rad(start_deg + np.arange(n) * 360.0 / n)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _unit_polygon(kind: str) -> np.ndarray:
    """Vertices around (0, 0) within radius 1, before rotation; y points down as in images."""
    if kind == "circle":
        return _regular(64, 1.0, 0.0)
    if kind == "square":
        return _regular(4, 1.0, 45.0)
    if kind == "triangle":
        return _regular(3, 1.0, -90.0)
    if kind == "hexagon":
        return _regular(6, 1.0, 0.0)
    if kind == "star":
        outer, inner = _regular(5, 1.0, -90.0), _regular(5, 0.45, -54.0)
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if kind == "ellipse":
        return _regular(64, 1.0, 0.0) * np.array([1.0, 0.55])
    if kind == "cross":
        w = 0.3
        a = math.sqrt(1.0 - w * w)  # arm length such that the outer corners sit on the unit circle
        return np.array([(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a),
                         (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)])
    if kind == "diamond":
        return np.array([(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)])
    raise ValueError(f"unknown shape kind '{kind}'; choose one of {', '.join(SHAPE_KINDS)}")


def shape_polygon(kind: str, center: Sequence[float], size: float, angle: float = 0.0) -> np.ndarray:
    """(N, 2) float vertices (x, y) of ``kind`` of diameter ``size`` at ``center``, rotated ``angle`` degrees."""
    t = math.radians(angle)
    rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return _unit_polygon(kind) @ rotation.T * (size / 2.0) + np.asarray(center, dtype=np.float64)


def draw_shape(canvas: np.ndarray, kind: str, center: Sequence[float], size: float,
               color: Sequence[int], angle: float = 0.0) -> np.ndarray:
    """Paint ``kind`` onto ``canvas`` (H, W, 3 uint8, in place); returns the boolean mask of painted pixels.

    The vertices are ``shape_polygon(kind, center, size, angle)``.
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ValueError(f"canvas must be an H x W x 3 uint8 array, got {canvas.shape} {canvas.dtype}")
    points = np.round(shape_polygon(kind, center, size, angle) * (1 << _SHIFT)).astype(np.int32)
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    mask = mask.astype(bool)
    canvas[mask] = np.asarray(color, dtype=np.uint8)[:3]
    return mask


def random_color(rng: np.random.Generator, avoid: Optional[Sequence] = None, min_distance: float = 90.0
                 ) -> Tuple[int, int, int]:
    """A saturated RGB colour; with ``avoid`` (one colour or several), at least ``min_distance`` away
    from each of them (Euclidean in RGB) when 32 tries allow it."""
    avoid_list = [] if avoid is None else [avoid] if np.ndim(avoid) == 1 else list(avoid)
    best, best_distance = None, -1.0
    for _ in range(32):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(140, 256), rng.integers(110, 256)]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
        color = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
        distance = min((float(np.linalg.norm(np.subtract(color, a, dtype=np.float64))) for a in avoid_list),
                       default=float("inf"))
        if distance >= min_distance:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured H x W x 3 uint8 background: a muted two-colour gradient, pixel noise and a few lines,
    so that a network has to find shapes rather than the only non-flat region."""
    c0 = rng.uniform(40, 200, size=3)
    c1 = rng.uniform(40, 200, size=3)
    t = math.radians(rng.uniform(0, 360))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (xs * math.cos(t) + ys * math.sin(t))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = c0 + ramp[..., None] * (c1 - c0)
    image += rng.normal(0.0, rng.uniform(4.0, 14.0), size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        shade = tuple(int(v) for v in rng.uniform(30, 225, size=3))
        cv2.line(image, p0, p1, shade, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_8)
    return image
