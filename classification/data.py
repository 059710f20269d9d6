"""Classification data: ImageFolder trees and the built-in synthetic shapes, read with OpenCV.

An ImageFolder tree is torchvision's (and ImageNet's) layout, ``root/CLASS/image.JPEG``: one folder
per class, classes sorted by name, labels their positions. Problems a user can fix are found before
training starts (missing root, no class folders, an empty class folder); a file that cannot be
decoded is found when it is read, and either stops the run with a :class:`engine.data.DataError`
naming it or, with ``data.skip_bad``, is skipped and counted (the dataset returns ``None``).

Samples are ``(image, label)`` with ``image`` an RGB float tensor in [0, 1], [3, H, W] (or what the
evaluation view makes of it, see :mod:`classification.transforms`); normalisation for the weights is
applied later, in one place (:meth:`classification.task.ClassificationTask.normalize`).
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset

from engine.config import ConfigError
from engine import image_io
from engine.data import ConcatDataset, DataError, split_item

from .folder_index import IMG_EXTENSIONS, FolderIndex, load_folder_index

__all__ = ["IMG_EXTENSIONS", "decode_image", "read_image", "scan_image_folder", "ImageFolder",
           "draw_shape_image", "SyntheticShapes", "ConcatClassification",
           "build_classification_set"]

logger = logging.getLogger(__name__)

_REMEDY = "replace or delete the file, or set data.skip_bad=true to skip unreadable images"


def decode_image(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Encoded bytes -> RGB ``uint8`` [H, W, 3]; anything else raises DataError naming ``path``."""
    return image_io.decode_image(data, path, _REMEDY)


def read_image(path: str) -> np.ndarray:
    """Read an image file to RGB ``uint8`` [H, W, 3]; missing or unreadable files raise DataError."""
    return image_io.read_image(path, remedy=_REMEDY,
                               missing="was it moved or deleted after the dataset was scanned?")


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------


def scan_image_folder(root: str, key: str = "root", skip_bad: bool = False) -> Tuple[List[str], List[str], List[int]]:
    """``(class names, file paths, labels)`` of ``root/CLASS/*`` as lists, in torchvision's order
    (:func:`classification.folder_index.load_folder_index`, which :class:`ImageFolder` keeps as flat
    arrays instead).

    Raises DataError (naming ``key``, the config entry) when the root is missing, has no class
    folders, or a class folder holds no image (with ``skip_bad`` an empty class only warns: it keeps
    its label so that labels stay those of the folder list). Files without an image extension are
    ignored and counted in a warning; hidden files are ignored.
    """
    index = load_folder_index(root, key, skip_bad)
    return index.classes, list(index.paths), index.labels.tolist()


class ImageFolder(Dataset):
    """``root/CLASS/image`` decoded with OpenCV.

    ``transform(image_uint8_rgb, sample_seed) -> tensor``; items are ``index`` (evaluation) or
    ``(index, sample_seed)`` (training, as the engine's sampler gives them). The index of the tree
    (:mod:`classification.folder_index`) is scanned once per machine and cached as flat arrays that
    every rank and loader worker memory-maps (``$RESKIT_CACHE``); ``paths[i]`` makes one path
    string when it is asked for, so no per-sample Python object lives in a worker (a list of 1.28M
    str would be copied into each worker page by page as reference counts change).
    """

    def __init__(self, root: str, transform: Optional[Callable] = None, key: str = "root", skip_bad: bool = False):
        self.root = root
        self.index: FolderIndex = load_folder_index(root, key, skip_bad)
        entry = self.index.entry
        logger.info("%s: %s: %s images in %d classes; index %s, %s", key, root, f"{len(self.index):,}",
                    len(self.index.classes), entry.describe(), entry.describe_size())
        self.classes = self.index.classes
        self.paths = self.index.paths
        self.labels = self.index.labels
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Optional[np.ndarray]:
        """The decoded image, or None when it is unreadable and ``skip_bad`` (a warning names it)."""
        path = self.paths[index]
        try:
            return read_image(path)
        except DataError as e:
            if not self.skip_bad:
                raise
            warnings.warn(f"data.skip_bad: skipped {str(e).split('; ')[0]}")
            return None

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        image = self.load(index)
        if image is None:
            return None
        label = int(self.labels[index])
        return (self.transform(image, sample_seed) if self.transform else image), label


# --------------------------------------------------------------------------------------------------
# Synthetic shapes
# --------------------------------------------------------------------------------------------------


def draw_shape_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``kind`` shape of random size (50-90% of the side), position, angle and colour on a random
    textured background, RGB ``uint8`` [size, size, 3] (the primitives of :mod:`engine.shapes`)."""
    from engine import shapes

    extent = float(rng.uniform(0.5, 0.9) * size)
    center = (float(rng.uniform(extent / 2, size - extent / 2)), float(rng.uniform(extent / 2, size - extent / 2)))
    angle = float(rng.uniform(0.0, 360.0))
    image = shapes.random_background(rng, size, size)
    shapes.draw_shape(image, kind, center, extent, shapes.random_color(rng), angle)
    return image


class SyntheticShapes(Dataset):
    """One shape per image on a textured background; the class is the kind of shape.

    Image ``i`` is drawn from ``(seed, i)`` alone when it is first read, so the set is the same in
    every process and after a resume; labels cycle through the classes (balanced). With ``cache``
    each process keeps the images it drew (``num_images * image_size**2 * 3`` bytes at most), which
    pays off from the second epoch on.
    """

    def __init__(self, num_images: int, image_size: int = 64, num_classes: int = 0, seed: int = 0,
                 transform: Optional[Callable] = None, cache: bool = False):
        from engine import shapes

        kinds = list(shapes.SHAPE_KINDS)
        if num_classes > len(kinds):
            raise ValueError(f"num_classes: at most {len(kinds)} shape kinds ({', '.join(kinds)}), got {num_classes}")
        if num_images < 1 or image_size < 16:
            raise ValueError(f"num_images, image_size: need at least 1 image of at least 16 pixels, got "
                             f"{num_images} of {image_size}")
        self.classes = kinds[:num_classes] if num_classes else kinds
        self.num_images, self.image_size, self.seed = num_images, image_size, seed
        self.labels = np.arange(num_images, dtype=np.int64) % len(self.classes)
        self.transform = transform
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> np.ndarray:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        rng = np.random.default_rng([self.seed, index])
        image = draw_shape_image(self.classes[int(self.labels[index])], self.image_size, rng)
        if self.cache is not None:
            self.cache[index] = image
        return image

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        image = self.load(index)
        label = int(self.labels[index])
        return (self.transform(image, sample_seed) if self.transform else image), label


# --------------------------------------------------------------------------------------------------
# Several datasets as one
# --------------------------------------------------------------------------------------------------


class ConcatClassification(ConcatDataset):
    """Datasets joined end to end (:class:`engine.data.ConcatDataset`), each one's labels mapped into a
    common class list by name.

    ``classes`` is the sorted union of every dataset's classes (for the training sets), or given
    (validation sets are mapped into the training classes; a class unknown to training is an error).
    """

    def __init__(self, datasets: Sequence[Dataset], keys: Sequence[str], classes: Optional[List[str]] = None):
        super().__init__(datasets)
        if classes is None:
            classes = sorted({c for d in datasets for c in d.classes}) if len(datasets) > 1 else list(datasets[0].classes)
        index = {c: i for i, c in enumerate(classes)}
        self.classes = list(classes)
        self.maps = []
        for d, key in zip(datasets, keys):
            unknown = [c for c in d.classes if c not in index]
            if unknown:
                shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
                raise DataError(f"{key}: classes {unknown[:5]} are not among the {len(classes)} training classes "
                                f"({shown}); the class folder names must match")
            self.maps.append(np.array([index[c] for c in d.classes], dtype=np.int64))

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([m[d.labels] for d, m in zip(self.datasets, self.maps)])

    def __getitem__(self, item):
        which, _ = self.locate(split_item(item)[0])
        sample = super().__getitem__(item)
        if sample is None:  # unreadable and skipped (data.skip_bad)
            return None
        image, label = sample
        return image, int(self.maps[which][label])


def build_classification_set(entries: Sequence, transform: Optional[Callable], key: str, skip_bad: bool = False,
                             classes: Optional[List[str]] = None) -> ConcatClassification:
    """The datasets of ``data.train`` or ``data.val`` (``key`` names the entry in messages) as one.

    ``entries`` are :class:`~classification.config.ClsDatasetConfig`; ``classes``: map into these
    (validation into the training classes), else the union of the entries' classes.
    """
    datasets, keys = [], []
    for i, entry in enumerate(entries):
        k = f"{key}[{i}]"
        if entry.synthetic is not None:
            s = entry.synthetic
            try:
                datasets.append(SyntheticShapes(s.num_images, s.image_size, s.num_classes, s.seed, transform, s.cache))
            except ValueError as e:
                raise ConfigError(f"{k}.synthetic.{e}") from None
        else:
            datasets.append(ImageFolder(entry.root, transform, key=f"{k}.root", skip_bad=skip_bad))
        keys.append(k)
    if not datasets:
        raise DataError(f"{key}: no datasets; give a list of {{root: DIR}} or {{synthetic: {{...}}}}")
    return ConcatClassification(datasets, keys, classes)
