"""segmentation_loss: the plain cross-entropy of torchvision's reference, and hard pixel mining;
lovasz_softmax_loss against the authors' per-class loop and against 1 - IoU."""
import pytest
import torch
import torch.nn.functional as F

from engine.config import ConfigError
from segmentation.config import SegModelConfig
from segmentation.task import lovasz_softmax_loss, segmentation_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 9, 11, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 9, 11), generator=g)
    target[0, :3] = 255  # an ignored band
    return logits, target


def test_all_pixels_equal_torch_cross_entropy():
    logits, target = _batch()
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, target), expected)


@pytest.mark.parametrize("top_k", [0.05, 0.2, 0.5])
def test_top_k_averages_the_hardest_valid_pixels(top_k):
    logits, target = _batch(1)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = per_pixel[target != 255]
    k = int(top_k * valid.numel())
    expected = torch.sort(valid, descending=True).values[:k].mean()
    loss = segmentation_loss(logits, target, top_k=top_k)
    torch.testing.assert_close(loss, expected)
    assert loss > F.cross_entropy(logits, target, ignore_index=255)  # the hard pixels weigh more
    loss.backward()
    # only the k mined pixels pass a gradient
    moved = (logits.grad.abs().sum(1) > 0)
    assert int(moved.sum()) == k


def test_only_ignored_pixels_give_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for top_k in (1.0, 0.2):
        loss = segmentation_loss(logits, target, top_k=top_k)
        assert loss.item() == 0.0
        loss.backward()


def test_fewer_pixels_than_one_in_top_k_keep_the_hardest():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 255)
    target[0, 0, :3] = torch.tensor([0, 1, 2])  # 3 labelled pixels, 20% of them is 0.6
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
    torch.testing.assert_close(segmentation_loss(logits, target, top_k=0.2), per_pixel.max())


def test_loss_top_k_outside_0_1_is_a_config_error():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="loss_top_k"):
            SegModelConfig(loss_top_k=bad).validate("model.")


def _lovasz_reference(probs, labels):
    """Berman et al.'s lovasz_softmax_flat (classes='present'), one class at a time as they wrote it."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def test_lovasz_matches_the_authors_per_class_loop():
    logits, target = _batch(2)
    target[target == 4] = 3  # class 4 absent: it does not count
    valid = target != 255
    probs = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # [P, C]
    expected = _lovasz_reference(probs, target[valid])
    loss = lovasz_softmax_loss(logits, target)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    assert logits.grad.permute(0, 2, 3, 1)[~valid].abs().max() == 0  # ignored pixels pass no gradient


def test_lovasz_of_a_hard_prediction_is_one_minus_iou():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    prediction = torch.where(torch.rand(2, 8, 8, generator=g) < 0.3, torch.randint(0, 4, (2, 8, 8), generator=g),
                             target)
    logits = F.one_hot(prediction, 4).permute(0, 3, 1, 2).float() * 1e4  # softmax: exactly one-hot
    ious = [((prediction == c) & (target == c)).sum() / ((prediction == c) | (target == c)).sum()
            for c in range(4) if (target == c).any()]
    torch.testing.assert_close(lovasz_softmax_loss(logits, target), 1.0 - torch.stack(ious).float().mean())
    assert lovasz_softmax_loss(F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 1e4, target).item() == 0.0


def test_lovasz_subsample_takes_every_kth_valid_pixel():
    logits, target = _batch(4)
    valid = target != 255
    probs, labels = logits.softmax(1).permute(0, 2, 3, 1)[valid], target[valid]
    torch.manual_seed(0)
    offset = int(torch.randint(3, ()))
    torch.manual_seed(0)
    loss = lovasz_softmax_loss(logits, target, subsample=3)
    torch.testing.assert_close(loss, _lovasz_reference(probs[offset::3], labels[offset::3]))


def test_lovasz_of_only_ignored_pixels_is_zero():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = lovasz_softmax_loss(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()


def test_lovasz_settings_are_checked():
    with pytest.raises(ConfigError, match="loss_lovasz"):
        SegModelConfig(loss_lovasz=-1.0).validate("model.")
    with pytest.raises(ConfigError, match="lovasz_subsample"):
        SegModelConfig(lovasz_subsample=0).validate("model.")
