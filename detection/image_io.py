"""Reading images with OpenCV: always RGB uint8 H×W×3, or a DataError naming the file."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from engine.data import DataError

# IMREAD_COLOR turns grayscale into 3 channels, drops alpha, converts CMYK JPEGs and applies the EXIF
# orientation (as detectron2's reader does); IMREAD_ANYDEPTH keeps 16-bit data 16-bit so that we scale
# it to 8 bits ourselves instead of OpenCV's plain truncation.
_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


def _where(path: str, image_id: Optional[int]) -> str:
    return f"{path} (image id {image_id})" if image_id is not None else path


def decode_image(data: bytes, path: str = "<bytes>", image_id: Optional[int] = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB ``uint8`` array [H, W, 3]."""
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, _FLAGS) if buf.size else None
    if image is None:
        raise DataError(f"{_where(path, image_id)}: not a readable image (empty, truncated or not an image "
                        f"format OpenCV decodes); replace the file or remove the image from the dataset")
    if image.ndim == 2:  # defensive: some decoders ignore IMREAD_COLOR for exotic formats
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)  # 65535 -> 255
    elif image.dtype != np.uint8:
        raise DataError(f"{_where(path, image_id)}: unsupported pixel type {image.dtype}; "
                        f"convert the image to 8- or 16-bit")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str, image_id: Optional[int] = None) -> np.ndarray:
    """Read ``path`` to an RGB ``uint8`` array [H, W, 3]; a missing or corrupt file raises DataError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{_where(path, image_id)}: image file not found; check the images directory "
                        f"or the file_name in the annotation json") from None
    except OSError as e:
        raise DataError(f"{_where(path, image_id)}: cannot read the file ({e.strerror})") from None
    return decode_image(data, path, image_id)

