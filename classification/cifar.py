"""CIFAR-10 from the archives its authors publish, read locally (never downloaded).

Two layouts, each as a directory or as the ``.tar.gz`` it comes in
(https://www.cs.toronto.edu/~kriz/cifar.html):

  * python: ``cifar-10-batches-py/`` (``cifar-10-python.tar.gz``): pickled dicts with ``data``
    (uint8 [10000, 3072]: 1024 red, 1024 green, 1024 blue values of a 32x32 image, row-major) and
    ``labels``; ``batches.meta`` holds ``label_names``. This is also what
    ``torchvision.datasets.CIFAR10(root, download=True)`` leaves in ``root``.
  * binary: ``cifar-10-batches-bin/`` (``cifar-10-binary.tar.gz``): records of 1 label byte then the
    same 3072 bytes; ``batches.meta.txt`` holds the class names, one a line.

Training is ``data_batch_1`` .. ``data_batch_5`` (50 000 images), testing ``test_batch`` (10 000).
The pickles are read with a restricted unpickler: they may only rebuild numpy arrays and plain
containers, so a tampered file cannot run code when it is read.

Where a tool looks for it: :func:`find_cifar10` (an explicit path, then ``$RESKIT_CIFAR10``, then
``datasets/cifar10/raw`` and ``datasets/cifar10`` under the working directory).
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backbones.msra import RestrictedUnpickler
from engine.data import DataError

__all__ = ["CIFAR10_ENV", "CIFAR10_DEFAULT_DIRS", "CIFAR10_CLASSES", "Cifar10", "read_cifar10", "find_cifar10"]

CIFAR10_ENV = "RESKIT_CIFAR10"
CIFAR10_DEFAULT_DIRS = ("datasets/cifar10/raw", "datasets/cifar10")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_LAYOUTS = {  # layout -> (folder name, archive name, file name of a batch, meta file)
    "python": ("cifar-10-batches-py", "cifar-10-python.tar.gz", "{}", "batches.meta"),
    "binary": ("cifar-10-batches-bin", "cifar-10-binary.tar.gz", "{}.bin", "batches.meta.txt"),
}
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)
_PIXELS = 32 * 32 * 3
_HOW = ("expected the CIFAR-10 python or binary archive (cifar-10-python.tar.gz / cifar-10-binary.tar.gz "
        "from https://www.cs.toronto.edu/~kriz/cifar.html), unpacked or not")


@dataclass
class Cifar10:
    """Images are RGB ``uint8`` [N, 32, 32, 3], labels ``int64`` [N]; ``source`` says what was read."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: List[str]
    source: str


# --------------------------------------------------------------------------------------------------
# Decoding one batch file
# --------------------------------------------------------------------------------------------------


def _rows_to_images(rows: np.ndarray) -> np.ndarray:
    """[N, 3072] (planar R, G, B of 32x32) -> [N, 32, 32, 3]."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


class _CifarUnpickler(RestrictedUnpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise DataError(f"{self.source_name}: refusing to load '{module}.{name}': a CIFAR-10 batch holds "
                            "only numpy arrays and plain containers (this file would run code when read); "
                            "download the archive again") from None


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), name).load()  # latin1: the archive's pickles are Python 2's
    except DataError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(f"{name}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); "
                        "download the archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict, found {type(obj).__name__}")
    # Python 2 wrote str keys (read back as str with latin1); a Python 3 re-pickle may hold bytes keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _decode_python(data: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data, name)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{name}: a CIFAR-10 python batch has 'data' and 'labels', found {sorted(map(str, batch))}"
                        " (CIFAR-100's batches have 'fine_labels': this reader is for CIFAR-10)")
    rows = np.asarray(batch["data"])
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != _PIXELS:
        raise DataError(f"{name}: 'data' must be uint8 [N, {_PIXELS}], found {rows.dtype} {list(rows.shape)}")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if len(labels) != len(rows):
        raise DataError(f"{name}: {len(rows)} images but {len(labels)} labels")
    return _rows_to_images(rows), labels


def _decode_binary(data: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % (_PIXELS + 1):
        raise DataError(f"{name}: {len(data)} bytes is not a whole number of CIFAR-10 records "
                        f"(1 label byte + {_PIXELS} pixel bytes each); the file is cut or of another kind")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _PIXELS + 1)
    return _rows_to_images(records[:, 1:]), records[:, 0].astype(np.int64)


def _decode_classes(layout: str, data: Optional[bytes], name: str) -> List[str]:
    if data is None:
        return list(CIFAR10_CLASSES)
    if layout == "python":
        names = _unpickle(data, name).get("label_names", CIFAR10_CLASSES)
        names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    else:
        names = [line.strip() for line in data.decode("latin1").splitlines() if line.strip()]
    if len(names) != 10:
        raise DataError(f"{name}: {len(names)} class names, CIFAR-10 has 10 (is this CIFAR-100?)")
    return names


# --------------------------------------------------------------------------------------------------
# Where the files are: a directory or a .tar.gz
# --------------------------------------------------------------------------------------------------


def _directory_reader(folder: str) -> Callable[[str], Optional[bytes]]:
    def read(name: str) -> Optional[bytes]:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()
    return read


def _tar_reader(path: str) -> Tuple[Dict[str, bytes], str]:
    """The regular files of a CIFAR tarball by base name, and its layout."""
    try:
        with tarfile.open(path, "r:*") as tar:
            files = {}
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and (base.startswith(("data_batch_", "test_batch", "batches.meta"))):
                    files[base] = tar.extractfile(member).read()  # read into memory: nothing is extracted
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar archive ({e}); {_HOW}") from None
    if "data_batch_1.bin" in files or "test_batch.bin" in files:
        return files, "binary"
    if "data_batch_1" in files or "test_batch" in files:
        return files, "python"
    raise DataError(f"{path}: holds no CIFAR-10 batches (data_batch_1 .. test_batch); {_HOW}")


def _locate(path: str) -> Tuple[str, Callable[[str], Optional[bytes]], str]:
    """(layout, name -> bytes or None, description) for a batches folder, a folder holding one (or
    its tarball), or a tarball."""
    if os.path.isfile(path):
        files, layout = _tar_reader(path)
        return layout, files.get, f"{path} ({layout} layout, archive)"
    if not os.path.isdir(path):
        raise DataError(f"CIFAR-10 path {path}: not found; {_HOW}")
    for layout, (_, _, batch, _) in _LAYOUTS.items():  # the batches folder itself
        if any(os.path.isfile(os.path.join(path, batch.format(name))) for name in _TRAIN + _TEST):
            return layout, _directory_reader(path), f"{path} ({layout} layout)"
    for folder, _, _, _ in _LAYOUTS.values():  # the folder above it, as the tarball unpacks
        if os.path.isdir(os.path.join(path, folder)):
            return _locate(os.path.join(path, folder))
    for _, archive, _, _ in _LAYOUTS.values():  # the folder holding the tarball
        if os.path.isfile(os.path.join(path, archive)):
            return _locate(os.path.join(path, archive))
    raise DataError(f"CIFAR-10 path {path}: holds neither cifar-10-batches-py/ nor cifar-10-batches-bin/ "
                    f"(nor their .tar.gz, nor data_batch_1 itself); {_HOW}")


def _read_split(layout: str, read: Callable[[str], Optional[bytes]], names: Sequence[str], where: str
                ) -> Tuple[np.ndarray, np.ndarray]:
    decode = _decode_python if layout == "python" else _decode_binary
    pattern = _LAYOUTS[layout][2]
    images, labels = [], []
    for name in names:
        file = pattern.format(name)
        data = read(file)
        if data is None:
            raise DataError(f"{where}: {file} is missing; the archive is incomplete, download it again")
        x, y = decode(data, f"{where}: {file}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{where}: {file}: labels outside 0..9 (is this CIFAR-100?)")
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar10(path: str) -> Cifar10:
    """Read CIFAR-10 from ``path``: ``cifar-10-batches-py`` / ``cifar-10-batches-bin`` (or the folder
    holding one of them or its tarball), or ``cifar-10-python.tar.gz`` / ``cifar-10-binary.tar.gz``.
    Bad or missing files raise :class:`engine.data.DataError` naming them."""
    path = os.path.expanduser(str(path))
    layout, read, where = _locate(path)
    train_images, train_labels = _read_split(layout, read, _TRAIN, where)
    test_images, test_labels = _read_split(layout, read, _TEST, where)
    meta = _LAYOUTS[layout][3]
    classes = _decode_classes(layout, read(meta), f"{where}: {meta}")
    return Cifar10(train_images, train_labels, test_images, test_labels, classes, where)


def find_cifar10(path: Optional[str] = None, environ: Optional[Dict[str, str]] = None,
                 search: Sequence[str] = CIFAR10_DEFAULT_DIRS) -> Optional[str]:
    """Where CIFAR-10 is, or None: ``path`` if given, else ``$RESKIT_CIFAR10`` if set (both are then
    required to hold it: :func:`read_cifar10` reports what is wrong), else the first of ``search``
    (relative to the working directory) that holds one of the layouts."""
    environ = os.environ if environ is None else environ
    if path:
        return path
    if environ.get(CIFAR10_ENV):
        return environ[CIFAR10_ENV]
    for folder in search:
        for sub, archive, _, _ in _LAYOUTS.values():
            if os.path.isdir(os.path.join(folder, sub)) or os.path.isfile(os.path.join(folder, archive)):
                return folder
    return None
