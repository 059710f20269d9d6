"""Transforms keep images, boxes and masks aligned; the resize is detectron2's; padding is torchvision's."""
import albumentations as A
import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from backbones.norm import TORCHVISION_INPUT_NORM
from detection.batching import collate_detection, normalize_and_pad, pad_images
from detection.masks import mask_bbox
from detection.transforms import (DetectionTransform, ResizeShortestEdge, boxes_to_original,
                                  build_eval_transform, build_train_transform)

COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250)]


def scene(height=90, width=140):
    """Three filled rectangles of known colours on grey, their boxes (pixel edges) and masks."""
    image = np.full((height, width, 3), 128, np.uint8)
    boxes = np.array([[10, 12, 50, 40], [70, 30, 130, 85], [0, 60, 20, 90]], np.float32)
    masks = np.zeros((3, height, width), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        image[y1:y2, x1:x2] = COLOURS[i]
        masks[i, y1:y2, x1:x2] = 1
    return image, boxes, np.array([1, 2, 3]), masks


@pytest.mark.parametrize("seed", range(6))
def test_flip_and_resize_keep_everything_aligned(seed):
    image, boxes, labels, masks = scene()
    transform = build_train_transform(min_sizes=(45, 60, 90, 120, 135), max_size=200, flip_prob=0.5)
    out = transform(image, boxes, labels, masks, seed=seed)
    height, width = out["image"].shape[:2]
    assert out["masks"].shape == (3, height, width) and out["labels"].tolist() == [1, 2, 3]
    for i in range(3):
        mask = out["masks"][i].astype(bool)
        # the box of the mask equals the transformed box (to the pixel the nearest-neighbour resize rounds to)
        assert np.abs(mask_bbox(mask) - out["boxes"][i]).max() <= 1.0, (seed, i)
        # the pixels under the mask have the shape's colour, away from the interpolated border
        core = mask.copy()
        core[1:] &= mask[:-1]
        core[:-1] &= mask[1:]
        core[:, 1:] &= mask[:, :-1]
        core[:, :-1] &= mask[:, 1:]
        assert core.sum() > 0
        assert np.abs(out["image"][core].astype(int) - COLOURS[i]).max() <= 2


def test_flip_is_exact_without_resize():
    image, boxes, labels, masks = scene()
    out = DetectionTransform([A.HorizontalFlip(p=1.0)])(image, boxes, labels, masks, seed=0)
    assert np.array_equal(out["image"], image[:, ::-1]) and np.array_equal(out["masks"], masks[:, :, ::-1])
    # albumentations normalises boxes to [0, 1] internally: exact up to float32 rounding
    assert np.allclose(out["boxes"], [[90, 12, 130, 40], [10, 30, 70, 85], [120, 60, 140, 90]], atol=1e-4)
    for i in range(3):
        assert np.allclose(mask_bbox(out["masks"][i]), out["boxes"][i], atol=1e-4)


@pytest.mark.parametrize("hw, short, max_size, expected", [
    ((480, 640), 800, 1333, (800, 1067)),  # detectron2: 640 * 800 / 480 = 1066.67 -> 1067
    ((480, 1280), 800, 1333, (500, 1333)),  # the long side caps the scale
    ((640, 480), 600, 1000, (800, 600)),
    ((100, 100), 64, 0, (64, 64)),
])
def test_resize_shortest_edge_sizes(hw, short, max_size, expected):
    resize = ResizeShortestEdge((short,), max_size)
    assert resize.output_size(*hw, short) == expected
    image = np.zeros(hw + (3,), np.uint8)
    out = build_eval_transform(short, max_size)(image, np.array([[0, 0, hw[1], hw[0]]]), [1])
    assert out["image"].shape[:2] == expected
    assert out["boxes"].tolist() == [[0, 0, expected[1], expected[0]]]


def test_boxes_map_back_to_original():
    image, boxes, labels, _ = scene()
    out = build_eval_transform(45, 1000)(image, boxes, labels)
    back = boxes_to_original(torch.from_numpy(out["boxes"]), out["image"].shape[:2], image.shape[:2])
    assert torch.allclose(back, torch.from_numpy(boxes), atol=1e-3)


def test_boxes_pushed_out_are_dropped_with_their_masks():
    image, boxes, labels, masks = scene()
    crop = DetectionTransform([A.Crop(x_min=0, y_min=0, x_max=60, y_max=55)], min_visibility=0.3)
    out = crop(image, boxes, labels, masks, seed=0)
    assert out["indices"].tolist() == [0] and out["labels"].tolist() == [1]
    assert out["masks"].shape == (1, 55, 60) and out["masks"][0].sum() == 40 * 28


def test_photometric_changes_keep_geometry():
    image, boxes, labels, masks = scene()
    transform = build_train_transform(min_sizes=(90,), max_size=1000, flip_prob=0.0, color_jitter=0.4,
                                      brightness_contrast=0.2)
    changed = [not np.array_equal(transform(image, boxes, labels, masks, seed=s)["image"], image) for s in range(4)]
    out = transform(image, boxes, labels, masks, seed=1)
    assert any(changed) and np.allclose(out["boxes"], boxes, atol=1e-4) and np.array_equal(out["masks"], masks)


def test_pad_images_equals_torchvision_batch_images():
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8),
              torch.randint(0, 256, (3, 65, 40), dtype=torch.uint8)]
    tv = GeneralizedRCNNTransform(min_size=10, max_size=1000, image_mean=TORCHVISION_INPUT_NORM["mean"],
                                  image_std=TORCHVISION_INPUT_NORM["std"])
    reference = tv.batch_images([tv.normalize(img.float() / 255) for img in images], size_divisible=32)
    batch, sizes = normalize_and_pad(images, TORCHVISION_INPUT_NORM, size_divisible=32)
    assert batch.shape == (2, 3, 96, 96) and sizes == [(50, 70), (65, 40)]
    assert torch.equal(batch, reference)
    plain, _ = pad_images([img.float() for img in images], size_divisible=0)
    assert plain.shape == (2, 3, 65, 70) and plain[1, :, 60:, 50:].abs().sum() == 0


def test_collate_keeps_images_unpadded():
    samples = [(torch.zeros(3, 10, 20, dtype=torch.uint8), {"image_id": 1}),
               (torch.zeros(3, 30, 5, dtype=torch.uint8), {"image_id": 2})]
    images, targets = collate_detection(samples)
    assert [tuple(i.shape) for i in images] == [(3, 10, 20), (3, 30, 5)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_random_transforms_are_drawn_independently():
    # Compose.set_random_seed hands every transform the same seed: a p=0.5 flip and a p=0.5
    # brightness change would then always fire together. Each must be drawn on its own.
    image, boxes, labels, masks = scene()
    transform = build_train_transform(min_sizes=(90,), max_size=1000, flip_prob=0.5, brightness_contrast=0.3)
    counts = {}
    for seed in range(200):
        out = transform(image, boxes, labels, masks, seed=seed)
        flipped = bool(out["boxes"][0, 0] > out["image"].shape[1] / 2)  # the first box starts left
        changed = bool(out["image"][0, 70].tolist() != [128, 128, 128])  # background in both flips
        counts[flipped, changed] = counts.get((flipped, changed), 0) + 1
    assert len(counts) == 4 and min(counts.values()) > 25, counts
