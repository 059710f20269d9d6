"""Reading images with OpenCV for every task: always RGB ``uint8`` [H, W, 3], or a DataError naming
the file and what to do.

``cv2.IMREAD_COLOR`` turns grayscale into 3 channels, drops alpha (as PIL's ``convert("RGB")`` in
torchvision's readers), converts CMYK JPEGs and applies the EXIF orientation (as detectron2's reader
does); ``IMREAD_ANYDEPTH`` keeps 16-bit data 16-bit so that we scale it to 8 bits ourselves instead
of OpenCV's truncation of the low byte. Each task words the remedy for its own data (``remedy``).

What libjpeg and libpng print on the C stderr while decoding ("Corrupt JPEG data: premature end of
data segment") names no file, and does not reach ``log.txt``. After :func:`name_decoder_messages`
(the trainer calls it; forked loader workers inherit it) each decode runs with fd 2 pointed at a
file of this process, and a message found there becomes one logged warning naming the image, once
per file and process. OpenCV has no hook for these messages, hence the redirection.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from typing import Optional

import cv2
import numpy as np

from .data import DataError

__all__ = ["decode_image", "read_image", "check_rgb_images", "name_decoder_messages", "decoder_messages_named",
           "c_stderr_to", "message_lines"]

logger = logging.getLogger(__name__)

_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
_REMEDY = "replace or delete the file"


@contextlib.contextmanager
def c_stderr_to(file):
    """fd 2 pointed at ``file`` inside the block: what C libraries (libjpeg, libpng) print there lands
    in it. fd 2 belongs to the whole process: callers with threads hold a lock around it."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def message_lines(text: str) -> str:
    """A decoder's messages as one line."""
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


class _DecoderMessages:
    """fd 2 of this process pointed at a file while OpenCV decodes; what the C decoders wrote there."""

    def __init__(self):
        self.enabled = False
        self.pid = None
        self.file = None
        self.lock = threading.Lock()  # fd 2 belongs to the whole process
        self.named = set()

    def decode(self, buf: np.ndarray, where: str):
        if not self.enabled:
            return cv2.imdecode(buf, _FLAGS)
        with self.lock:
            if self.pid != os.getpid():  # a forked worker: a file of its own
                self.file, self.pid, self.named = tempfile.TemporaryFile(), os.getpid(), set()
            with c_stderr_to(self.file):
                image = cv2.imdecode(buf, _FLAGS)
            fd = self.file.fileno()
            text = ""
            size = os.lseek(fd, 0, os.SEEK_CUR)
            if size:
                os.lseek(fd, 0, os.SEEK_SET)
                text = os.read(fd, min(size, 65536)).decode("utf-8", "replace")
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
        message = message_lines(text)
        if message and where not in self.named:
            self.named.add(where)
            logger.warning(f"{where}: the decoder says: {message} (the image was decoded and is used; "
                           "tools/check_dataset.py lists every such file)")
        return image


_MESSAGES = _DecoderMessages()


def name_decoder_messages(enabled: bool = True) -> None:
    """Turn the C decoders' stderr messages into warnings naming the image (see the module's doc)."""
    _MESSAGES.enabled = enabled


@contextlib.contextmanager
def decoder_messages_named():
    """:func:`name_decoder_messages` inside the block (training, ``--eval-only``, ``eval_coco.py``,
    ``predict.py``), as it was before it afterwards."""
    before = _MESSAGES.enabled
    name_decoder_messages(True)
    try:
        yield
    finally:
        name_decoder_messages(before)


def decode_image(data: bytes, where: str = "<bytes>", remedy: str = _REMEDY) -> np.ndarray:
    """Encoded bytes -> RGB ``uint8`` [H, W, 3]; anything else raises DataError naming ``where``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    image = _MESSAGES.decode(buf, where) if buf.size else None
    if image is None:
        what = "an empty file" if not buf.size else "not an image OpenCV can decode (corrupt, truncated or " \
                                                    "another kind of file with an image name)"
        raise DataError(f"{where}: {what}; {remedy}")
    if image.ndim == 2:  # defensive: a decoder that ignores IMREAD_COLOR
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif image.dtype == np.float32:  # e.g. 32-bit TIFF / EXR, assumed in [0, 1]
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{where}: unsupported pixel type {image.dtype}; convert the image to 8-bit RGB")
    if image.shape[2] == 4:  # defensive, as above
        image = image[:, :, :3]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str, where: Optional[str] = None, remedy: str = _REMEDY,
               missing: str = "check the path") -> np.ndarray:
    """Read ``path`` to RGB ``uint8`` [H, W, 3]; a missing, unreadable or corrupt file raises
    DataError naming ``where`` (default: the path); ``missing`` says what to do about a missing file."""
    where = where or path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{where}: file not found; {missing}") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read the file ({e.strerror}); check its permissions") from None
    return decode_image(data, where, remedy)


def check_rgb_images(images) -> None:
    """What every predictor takes: RGB ``uint8`` arrays [H, W, 3]; ValueError naming the first that is not."""
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected an RGB uint8 array H x W x 3, got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
