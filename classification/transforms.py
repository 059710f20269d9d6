"""Classification augmentation recipes (albumentations) and the evaluation views.

Every transform here is called as ``transform(image, sample_seed)`` on an RGB ``uint8`` [H, W, 3]
image and returns float32 tensors in [0, 1] (normalisation for the weights happens on the batch, in
:meth:`classification.task.ClassificationTask.normalize`). All randomness comes from ``sample_seed``
(see :func:`seed_compose`), so a sample looks the same whatever the workers, ranks or resumes.

Recipes (``data.recipe``):
  * ``paper`` — ResNet paper §3.4 (after AlexNet / VGG): shorter side random in ``scale_range``
    ([256, 480]), random ``crop_size`` crop, horizontal flip, AlexNet's PCA lighting.
  * ``modern`` — random-resized crop (``rrc_scale``), flip, optional RandAugment (timm); mixup /
    cutmix and label smoothing act on the batch (:mod:`classification.task`).
  * ``cifar`` — §4.2: 4 pixels of zero padding on each side, random 32x32 crop, flip.
  * ``shapes`` — the synthetic demo set: shorter side to ``crop_size``, then as ``cifar``.

Evaluation views: ``center`` (shorter side ``resize_size``, centre ``crop_size`` crop), ``ten_crop``
(torchvision's ten_crop of the resized image: [10, 3, crop, crop]) and ``multiscale`` (the whole
image with its shorter side at each size: a list of [3, h, w]).
"""
from __future__ import annotations

import random
from typing import Any, Callable, List, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from engine.sampler import seed_compose

__all__ = ["IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "pca_lighting", "PCALighting", "TimmRandAugment",
           "seed_compose", "AlbumentationsTransform", "TenCrop", "MultiScale", "build_train_transform",
           "build_eval_transform", "to_tensor"]

# The eigen-decomposition of ImageNet's RGB pixel covariance (pixels in [0, 1]) used by AlexNet's
# lighting noise, as published with fb.resnet.torch (datasets/imagenet.lua); eigenvectors are columns.
IMAGENET_PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
IMAGENET_PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                                [-0.5808, -0.0045, -0.8140],
                                [-0.5836, -0.6948, 0.4203]], dtype=np.float32)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 (-> / 255) or float32 -> [3, H, W] float32 tensor."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) * (1.0 / 255.0)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Transforms of our own
# --------------------------------------------------------------------------------------------------


def pca_lighting(image: np.ndarray, alpha: np.ndarray, eigval: np.ndarray = IMAGENET_PCA_EIGVAL,
                 eigvec: np.ndarray = IMAGENET_PCA_EIGVEC) -> np.ndarray:
    """AlexNet's lighting noise: add ``eigvec @ (alpha * eigval)`` to every RGB pixel (float, [0, 1])."""
    shift = eigvec @ (np.asarray(alpha, dtype=np.float32) * eigval)
    return (image + shift.astype(np.float32)).astype(np.float32)


class PCALighting(A.ImageOnlyTransform):
    """AlexNet-style PCA lighting (Krizhevsky et al. 2012, §4.1), used by the ResNet paper.

    Written here because albumentations' ``FancyPCA`` is another transform: it recomputes a PCA of
    each image's own pixels and adds noise proportional to each pixel's deviation from that image's
    mean (``eigvecs @ diag(alpha * eigvals) @ centred_pixel``), whereas AlexNet adds one RGB offset per
    image, ``eigvec @ (alpha * eigval)``, from the PCA of the whole training set. As in
    fb.resnet.torch, it acts on float images in [0, 1] and does not clip.
    """

    def __init__(self, alphastd: float = 0.1, eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC, p: float = 1.0):
        super().__init__(p=p)
        self.alphastd = float(alphastd)
        self.eigval = np.asarray(eigval, dtype=np.float32)
        self.eigvec = np.asarray(eigvec, dtype=np.float32)

    def get_params(self) -> dict:
        return {"alpha": self.random_generator.normal(0.0, self.alphastd, 3).astype(np.float32)}

    def apply(self, img: np.ndarray, alpha: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.float32:
            raise TypeError("PCALighting expects float32 images in [0, 1]: put A.ToFloat(255) before it")
        return pca_lighting(img, alpha, self.eigval, self.eigvec)

    def get_transform_init_args_names(self):
        return ("alphastd",)


class TimmRandAugment(A.ImageOnlyTransform):
    """timm's ``rand_augment_transform`` (PIL) inside an albumentations pipeline.

    timm's RandAugment draws from the global ``random`` and ``np.random``; we seed both from this
    transform's own generator (itself seeded from the sample seed) and restore them afterwards, so
    the result is a function of the sample seed and the caller's global RNGs are untouched.
    """

    def __init__(self, config: str, image_size: int, mean: Sequence[float] = (0.485, 0.456, 0.406), p: float = 1.0):
        super().__init__(p=p)
        from timm.data import rand_augment_transform

        self.config = config
        hparams = {"translate_const": int(image_size * 0.45), "img_mean": tuple(int(round(255 * m)) for m in mean)}
        self.ops = rand_augment_transform(config, hparams)

    def get_params(self) -> dict:
        return {"seed": int(self.random_generator.integers(0, 2**32 - 1))}

    def apply(self, img: np.ndarray, seed: int, **params: Any) -> np.ndarray:
        from PIL import Image

        if img.dtype != np.uint8:
            raise TypeError("TimmRandAugment expects uint8 images: put it before A.ToFloat")
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            out = self.ops(Image.fromarray(img))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return np.asarray(out, dtype=np.uint8)

    def get_transform_init_args_names(self):
        return ("config",)


class AlbumentationsTransform:
    """``(image, sample_seed) -> tensor``: an albumentations pipeline seeded per sample, then
    ``finish`` (to_tensor by default)."""

    def __init__(self, transforms: List, finish: Callable[[np.ndarray], Any] = to_tensor):
        self.compose = A.Compose(transforms)
        self.finish = finish

    def __call__(self, image: np.ndarray, sample_seed: int = 0):
        seed_compose(self.compose, sample_seed)
        return self.finish(self.compose(image=image)["image"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.compose.transforms})"


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------

_DOWNSCALE = "image"  # resize with INTER_AREA when shrinking (avoids aliasing), INTER_LINEAR otherwise


def build_train_transform(data_cfg, input_mean: Sequence[float] = (0.485, 0.456, 0.406)) -> AlbumentationsTransform:
    """The training augmentation of ``data_cfg.recipe`` (see the module docstring)."""
    c = data_cfg
    size = c.crop_size
    flip = [A.HorizontalFlip(p=0.5)] if c.flip else []
    if c.recipe == "paper":
        lo, hi = c.scale_range
        ops = [A.SmallestMaxSize(max_size=list(range(lo, hi + 1)), area_for_downscale=_DOWNSCALE),
               A.RandomCrop(size, size), *flip, A.ToFloat(max_value=255)]
        if c.pca_lighting > 0:
            ops.append(PCALighting(c.pca_lighting))
    elif c.recipe == "modern":
        ops = [A.RandomResizedCrop((size, size), scale=tuple(c.rrc_scale), area_for_downscale=_DOWNSCALE), *flip]
        if c.randaugment:
            ops.append(TimmRandAugment(c.randaugment, size, input_mean))
        ops.append(A.ToFloat(max_value=255))
    elif c.recipe in ("cifar", "shapes"):
        resize = [A.SmallestMaxSize(max_size=size, area_for_downscale=_DOWNSCALE)] if c.recipe == "shapes" else []
        pad = [A.Pad(padding=c.pad, fill=0, border_mode=cv2.BORDER_CONSTANT)] if c.pad else []
        # pad_if_needed: a CIFAR export is 32x32, but an odd image smaller than the crop must not fail
        ops = [*resize, *pad, A.RandomCrop(size, size, pad_if_needed=True), *flip, A.ToFloat(max_value=255)]
    else:
        raise ValueError(f"data.recipe: unknown recipe '{c.recipe}'")
    return AlbumentationsTransform(ops)


class TenCrop:
    """[H, W, 3] -> [10, 3, size, size]: torchvision's ``ten_crop`` (4 corners, centre, and the same
    five of the horizontally flipped image)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.stack(TF.ten_crop(to_tensor(image), [self.size, self.size]))


class MultiScale:
    """[H, W, 3] -> the image with its shorter side at each of ``sizes`` (list of [3, h, w])."""

    def __init__(self, sizes: Sequence[int]):
        self.resizes = [A.SmallestMaxSize(max_size=s, area_for_downscale=_DOWNSCALE, p=1.0) for s in sizes]

    def __call__(self, image: np.ndarray, sample_seed: int = 0) -> List[torch.Tensor]:
        return [to_tensor(r(image=image)["image"]) for r in self.resizes]


def build_eval_transform(data_cfg, test_cfg=None) -> Callable:
    """The evaluation view: centre crop, 10-crop (``test.ten_crop``) or multi-scale (``test.multiscale``)."""
    c = data_cfg
    if test_cfg is not None and test_cfg.multiscale:
        return MultiScale(test_cfg.multiscale)
    resize = A.SmallestMaxSize(max_size=c.resize_size, area_for_downscale=_DOWNSCALE)
    if test_cfg is not None and test_cfg.ten_crop:
        return AlbumentationsTransform([resize], finish=TenCrop(c.crop_size))
    return AlbumentationsTransform([resize, A.CenterCrop(c.crop_size, c.crop_size)])
