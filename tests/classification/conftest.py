"""Shared fixtures for the classification tests: small ImageFolder trees written on the fly."""
from __future__ import annotations

import io
import os
import sys

import cv2
import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable


def write_png(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def encode_pil(image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def random_rgb(rng: np.random.Generator, h: int = 20, w: int = 24) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """root/{cat,dog}/*.png: 3 + 2 clean 20x24 images; returns (root, {relative path: rgb})."""
    rng = np.random.default_rng(0)
    images = {}
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            rel = f"{cls}/{i:03d}.png"
            images[rel] = random_rgb(rng)
            write_png(str(tmp_path / "train" / rel), images[rel])
    return str(tmp_path / "train"), images


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine is small and shared; the tests compare numbers, not speed
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
