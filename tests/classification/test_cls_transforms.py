"""Augmentation recipes: a function of the sample seed, AlexNet's PCA lighting, independent transforms."""
from __future__ import annotations

import random

import albumentations as A
import numpy as np
import pytest
import torch

from classification.config import ClsDataConfig, ClsTestConfig
from classification.transforms import (IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, AlbumentationsTransform, PCALighting,
                                      TimmRandAugment, build_eval_transform, build_train_transform, pca_lighting,
                                      seed_compose, to_tensor)
from engine.sampler import derive_seed

RECIPES = {
    "paper": dict(recipe="paper", crop_size=48, scale_range=[56, 80], resize_size=56),
    "modern": dict(recipe="modern", crop_size=48, randaugment="rand-m9-mstd0.5", resize_size=56),
    "cifar": dict(recipe="cifar", crop_size=32, resize_size=32),
    "shapes": dict(recipe="shapes", crop_size=40, resize_size=40),
}


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_train_augmentation_is_a_function_of_the_sample_seed(recipe, image):
    cfg = ClsDataConfig(**RECIPES[recipe])
    a, b = build_train_transform(cfg), build_train_transform(cfg)  # as two loader workers would hold
    size = cfg.crop_size
    x = image[:32, :32] if recipe == "cifar" else image
    first = a(x, 1234)
    assert first.shape == (3, size, size) and first.dtype == torch.float32
    np_state, py_state = np.random.get_state(), random.getstate()
    for _ in range(2):  # other samples in between change nothing
        a(x, 99)
    assert torch.equal(a(x, 1234), first) and torch.equal(b(x, 1234), first)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert not torch.equal(a(x, 1235), first)


def test_transforms_of_a_pipeline_draw_independently(image):
    # Compose.set_random_seed alone gives every child the same seed: two p=0.5 flips would always
    # fire together. seed_compose gives each its own stream.
    compose = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    together = 0
    for seed in range(200):
        seed_compose(compose, seed)
        out = compose(image=image)["image"]
        h = np.array_equal(out, image[:, ::-1]) or np.array_equal(out, image[::-1, ::-1])
        v = np.array_equal(out, image[::-1]) or np.array_equal(out, image[::-1, ::-1])
        together += h == v
    assert 70 < together < 130  # about half, not 200


def test_pca_lighting_is_alexnets_formula():
    rng = np.random.default_rng(0)
    img = rng.random((5, 6, 3), dtype=np.float32)
    alpha = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    # Krizhevsky et al.: add [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T to every pixel, p_i the eigenvectors.
    expected = img.astype(np.float64).copy()
    for i in range(3):
        expected += alpha[i] * IMAGENET_PCA_EIGVAL[i] * IMAGENET_PCA_EIGVEC[:, i].astype(np.float64)
    assert np.allclose(pca_lighting(img, alpha), expected, atol=1e-6)
    assert np.allclose(PCALighting(0.1).apply(img, alpha=alpha), expected, atol=1e-6)


def test_pca_lighting_in_the_paper_recipe_draws_alpha_from_the_sample_seed(image):
    cfg = ClsDataConfig(**RECIPES["paper"])
    with_light = build_train_transform(cfg)
    without = build_train_transform(ClsDataConfig(**dict(RECIPES["paper"], pca_lighting=0.0)))
    seed = 42
    position = len(with_light.compose.transforms) - 1
    assert isinstance(with_light.compose.transforms[position], PCALighting)
    alpha = np.random.default_rng(derive_seed(seed, position)).normal(0.0, 0.1, 3).astype(np.float32)
    shift = torch.from_numpy(IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL)).view(3, 1, 1)
    assert torch.allclose(with_light(image, seed), without(image, seed) + shift, atol=1e-6)


def test_randaugment_leaves_the_global_rngs_alone(image):
    t = AlbumentationsTransform([TimmRandAugment("rand-m9-n3-mstd0.5", 70)])
    np.random.seed(0)
    random.seed(0)
    expected = (np.random.rand(), random.random())
    np.random.seed(0)
    random.seed(0)
    outs = [t(image, s) for s in (1, 2, 1)]
    assert (np.random.rand(), random.random()) == expected
    assert torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[1])


def test_evaluation_views(image):
    cfg = ClsDataConfig(crop_size=48, resize_size=56)
    center = build_eval_transform(cfg)(image)
    assert center.shape == (3, 48, 48)
    tens = build_eval_transform(cfg, ClsTestConfig(ten_crop=True))(image)
    assert tens.shape == (10, 3, 48, 48)
    full = to_tensor(A.SmallestMaxSize(max_size=56, area_for_downscale="image")(image=image)["image"])
    assert full.shape == (3, 56, 65)
    assert torch.equal(tens[0], full[:, :48, :48]) and torch.equal(tens[3], full[:, -48:, -48:])
    assert torch.equal(tens[4], full[:, 4:52, 8:56])  # centre: offsets round(8 / 2), round(17 / 2)
    assert torch.equal(tens[5], full.flip(-1)[:, :48, :48]) and torch.equal(center, tens[4])
    scales = build_eval_transform(cfg, ClsTestConfig(multiscale=[30, 60]))(image)
    assert [tuple(s.shape) for s in scales] == [(3, 30, 35), (3, 60, 70)]
