"""segmentation_loss: the plain cross-entropy of torchvision's reference, and hard pixel mining."""
import pytest
import torch
import torch.nn.functional as F

from engine.config import ConfigError
from segmentation.config import SegModelConfig
from segmentation.task import segmentation_loss


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
