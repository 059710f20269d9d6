"""Reading dataset images: :mod:`engine.image_io` with messages that name the COCO image id."""
from __future__ import annotations

from typing import Optional

import numpy as np

from engine import image_io

__all__ = ["read_image"]

_REMEDY = "replace the file or remove the image from the dataset (data.skip_bad=true skips and counts such images)"


def read_image(path: str, image_id: Optional[int] = None) -> np.ndarray:
    """Read ``path`` to an RGB ``uint8`` array [H, W, 3]; a missing or corrupt file raises DataError."""
    where = f"{path} (image id {image_id})" if image_id is not None else path
    return image_io.read_image(path, where, _REMEDY,
                               missing="check the images directory or the file_name in the annotation json")
