"""Augmentation keeps image and label map aligned (known shapes), pads with ignore, is seeded."""
import cv2
import numpy as np
import torch

from segmentation.transforms import build_eval_transform, build_train_transform, collate_train

RED, BLUE = (220, 30, 30), (30, 30, 220)


def scene():
    """A dark noisy image with a red rectangle (label 1) and a blue disc (label 2)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (90, 120, 3), dtype=np.uint8)
    label = np.zeros((90, 120), np.int32)
    image[10:50, 15:60], label[10:50, 15:60] = RED, 1
    disc = np.zeros((90, 120), np.uint8)
    cv2.circle(disc, (85, 55), 22, 1, -1)
    image[disc > 0], label[disc > 0] = BLUE, 2
    return image, label


def interior(mask):
    """Pixels of ``mask`` two pixels away from its edge (interpolation blurs the edge itself)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def is_colour(image, colour):
    return (np.abs(image.astype(int) - np.array(colour)).max(axis=2) < 40)


def test_train_transform_keeps_image_and_label_aligned():
    image, label = scene()
    transform = build_train_transform(base_size=90, crop_size=80, scale_range=(0.5, 2.0), flip_prob=0.5)
    flipped = padded = 0
    for seed in range(40):
        out_image, out_label = transform(image, label, seed=seed)
        assert out_image.shape == (80, 80, 3) and out_label.shape == (80, 80)
        assert set(np.unique(out_label)) <= {0, 1, 2, 255}
        for cls, colour in ((1, RED), (2, BLUE)):
            inside = interior(out_label == cls)
            coloured = interior(is_colour(out_image, colour))
            if inside.sum() > 20:
                assert is_colour(out_image, colour)[inside].mean() > 0.99, (seed, cls)
            if coloured.sum() > 20:
                assert (out_label[coloured] == cls).mean() > 0.99, (seed, cls)
        pad = out_label == 255
        if pad.any():
            padded += 1
            assert (out_image[pad] == 0).all()  # padding: image 0, label ignore
            assert pad[-1].all() or pad[:, -1].all()  # on the right / bottom, as torchvision pads
        red = np.argwhere(out_label == 1)
        blue = np.argwhere(out_label == 2)
        if len(red) and len(blue) and red[:, 1].mean() > blue[:, 1].mean():
            flipped += 1  # the rectangle is left of the disc unless flipped
    assert padded > 3 and 5 < flipped < 35


def test_same_seed_same_sample_and_labels_stay_integers():
    image, label = scene()
    transform = build_train_transform(base_size=90, crop_size=64)
    a, b, c = transform(image, label, seed=7), transform(image, label, seed=7), transform(image, label, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[1].dtype == np.int32


def test_eval_transform_resizes_the_short_side_or_nothing():
    image, label = scene()
    out_image, out_label = build_eval_transform(45)(image, label)
    assert out_image.shape == (45, 60, 3) and out_label.shape == (45, 60)
    assert set(np.unique(out_label)) <= {0, 1, 2}  # nearest neighbour: no blended labels
    assert build_eval_transform(None) is None


def test_collate_pads_labels_with_ignore():
    images, labels = collate_train([(torch.ones(3, 4, 5, dtype=torch.uint8), torch.zeros(4, 5, dtype=torch.int64)),
                                    (torch.ones(3, 6, 3, dtype=torch.uint8), torch.ones(6, 3, dtype=torch.int64))])
    assert images.shape == (2, 3, 6, 5) and labels.shape == (2, 6, 5)
    assert (labels[0, 4:] == 255).all() and (labels[1, :, 3:] == 255).all() and (images[0, :, 4:] == 0).all()
