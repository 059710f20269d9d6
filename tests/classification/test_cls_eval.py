"""The paper's testing schemes equal a direct computation on a tiny model."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from backbones import TORCHVISION_INPUT_NORM, build_classifier, normalize_image
from classification.config import ClsDataConfig, ClsTestConfig
from classification.evaluation import dense_logits, multiscale_scores, ten_crop_scores, topk_correct
from classification.task import collate_eval
from classification.transforms import build_eval_transform


def _normalize(x):
    return normalize_image(x, TORCHVISION_INPUT_NORM)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_classifier("resnet18", 6)
    for mod in m.modules():  # random BN statistics: eval mode then differs from identity
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 64), (70, 48), (64, 64))]


def test_fc_as_a_convolution_equals_the_classifier(model):
    x = torch.randn(2, 3, 75, 101)
    with torch.no_grad():
        assert torch.allclose(dense_logits(model, x), model(x), atol=1e-5, rtol=1e-5)
    timm_like = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert torch.equal(dense_logits(timm_like, x), timm_like(x))  # other networks: the classifier itself


def test_ten_crop_equals_the_mean_softmax_of_the_ten_crops(model, images):
    view = build_eval_transform(ClsDataConfig(crop_size=40, resize_size=48), ClsTestConfig(ten_crop=True))
    batch = collate_eval([(view(im), i) for i, im in enumerate(images)])
    with torch.no_grad():
        scores = ten_crop_scores(model, batch["images"], _normalize)
        expected = []
        for im in images:
            h, w = im.shape[:2]
            s = 48 / min(h, w)
            resized = cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            x = torch.from_numpy(resized).permute(2, 0, 1).float() / 255
            crops = list(TF.five_crop(x, [40, 40])) + list(TF.five_crop(x.flip(-1), [40, 40]))
            probs = [F.softmax(model(_normalize(c[None])), dim=1) for c in crops]
            expected.append(torch.cat(probs).mean(0))
    assert torch.allclose(scores, torch.stack(expected), atol=1e-6)


def test_multiscale_equals_the_mean_softmax_over_full_images(model, images):
    sizes = [32, 48, 80]
    view = build_eval_transform(ClsDataConfig(crop_size=32, resize_size=32), ClsTestConfig(multiscale=sizes))
    batch = collate_eval([(view(im), i) for i, im in enumerate(images)])
    with torch.no_grad():
        scores = multiscale_scores(model, batch["images"], _normalize)
        expected = []
        for im in images:
            h, w = im.shape[:2]
            probs = []
            for size in sizes:
                s = size / min(h, w)
                resized = cv2.resize(im, (round(w * s), round(h * s)),
                                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
                x = torch.from_numpy(resized).permute(2, 0, 1).float()[None] / 255
                assert min(x.shape[-2:]) == size
                probs.append(F.softmax(model(_normalize(x)), dim=1))  # the classifier on the whole image
            expected.append(torch.cat(probs).mean(0))
    assert torch.allclose(scores, torch.stack(expected), atol=1e-5)


def test_topk_counts_and_caps_k_at_the_number_of_classes():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0], [0.3, 0.1, 0.2, 0.15, 0.05, 0.2]])
    labels = torch.tensor([1, 5])
    hits = topk_correct(scores, labels, (1, 5))
    assert hits[1].tolist() == [True, False] and hits[5].tolist() == [True, True]
    three = topk_correct(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([0]), (1, 5))
    assert three[5].tolist() == [True]
