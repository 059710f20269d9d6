"""detection.poolers: RoIAlign as a weighted gather against torchvision's roi_align and
MultiScaleRoIAlign, forward and backward, on boxes inside, across and outside the map."""
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from detection.poolers import MultiScaleRoIAlign, gather_roi_align, roi_align


def _rois(n_images: int, height: int, width: int, scale: float, count: int = 200, seed: int = 0) -> torch.Tensor:
    """Boxes in image pixels: most inside, some across or beyond the border (the kernel's out-of-map
    rule), some smaller than a feature pixel (the minimum size of 1 when not aligned)."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float32) / scale
    xy = torch.rand(count, 2, generator=g) * size * 1.3 - 0.15 * size
    wh = torch.rand(count, 2, generator=g) * size * 0.6
    wh[:15] = torch.rand(15, 2, generator=g) * 0.5 / scale  # under one feature pixel
    boxes = torch.cat([xy, xy + wh], 1)
    batch = torch.randint(0, n_images, (count, 1), generator=g).float()
    return torch.cat([batch, boxes], 1)


CASES = [  # images, channels, height, width, spatial scale, output, sampling ratio, aligned
    (1, 8, 30, 40, 1 / 4, 7, 2, False),
    (2, 16, 17, 23, 1 / 8, 7, 2, True),
    (2, 4, 9, 11, 1 / 32, 14, 1, False),
    (1, 3, 25, 31, 1 / 16, (5, 3), 3, True),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gather_roi_align_equals_torchvision_forward_and_backward(case, layout):
    n, c, h, w, scale, out, ratio, aligned = case
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(n, c, h, w, generator=g)
    rois = _rois(n, h, w, scale)
    a = feature.clone().requires_grad_()
    b = feature.clone().contiguous(memory_format=layout).requires_grad_()
    want = torchvision_roi_align(a, rois, out, scale, ratio, aligned)
    got = gather_roi_align(b, rois, out, scale, ratio, aligned)
    assert got.shape == want.shape and got.dtype == want.dtype
    # the input's layout: an NCHW network gets NCHW RoIs, as from torchvision's op
    assert got.is_contiguous(memory_format=layout) and (layout == torch.channels_last) != got.is_contiguous()
    assert want.abs().sum() > 0 and (want == 0).any()  # boxes off the map pool zeros: the rule is exercised
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    upstream = torch.randn(want.shape, generator=g)
    (want * upstream).sum().backward()
    (got * upstream).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=2e-5)


def test_gather_roi_align_sees_a_shift_of_a_tenth_of_a_pixel():
    # the comparison above can fail: boxes moved by 0.1 feature pixel pool different values
    feature = torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0, 8.0, 8.0, 40.0, 48.0]])
    moved = rois + torch.tensor([0, 0.4, 0, 0.4, 0])
    diff = gather_roi_align(feature, moved, 7, 0.25, 2) - torchvision_roi_align(feature, rois, 7, 0.25, 2)
    assert diff.abs().max() > 1e-3


def test_roi_align_dispatch():
    feature = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.tensor([[0.0, 0.0, 12.0, 9.0], [5.0, 5.0, 60.0, 60.0]])]
    # a list of boxes per image, as torchvision takes it
    torch.testing.assert_close(roi_align(feature, boxes, 7, 0.25, 2), torchvision_roi_align(feature, boxes, 7, 0.25, 2),
                               rtol=0, atol=2e-6)
    # adaptive sampling (ratio <= 0): torchvision's own op, bitwise
    assert torch.equal(roi_align(feature, boxes, 7, 0.25, 0, True), torchvision_roi_align(feature, boxes, 7, 0.25, 0, True))
    empty = gather_roi_align(feature, torch.zeros(0, 5), 7, 0.25, 2)
    assert empty.shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio"):
        gather_roi_align(feature, torch.zeros(1, 5), 7, 0.25, 0)


def test_bf16_features_pool_in_float32_like_torchvision():
    feature = torch.randn(1, 8, 20, 20, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    rois = _rois(1, 20, 20, 0.25, count=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torchvision_roi_align(feature, rois, 7, 0.25, 2)
        got = roi_align(feature, rois, 7, 0.25, 2)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=1.6e-2)  # one bf16 step at |x| < 4


def test_multiscale_roi_align_equals_torchvision():
    g = torch.Generator().manual_seed(2)
    names = ["p2", "p3", "p4", "p5"]
    image_shapes = [(512, 640), (480, 600)]  # LevelMapper: boxes of 112 px and more leave P2
    features = {name: torch.randn(2, 8, 512 // s, 640 // s, generator=g) for name, s in zip(names, (4, 8, 16, 32))}
    features["p6"] = torch.randn(2, 8, 2, 3, generator=g)  # not pooled
    boxes = []
    for i, (h, w) in enumerate(image_shapes):
        xy = torch.rand(60, 2, generator=g) * torch.tensor([w, h]) * 0.8
        wh = torch.rand(60, 2, generator=g) ** 2 * torch.tensor([w, h])  # small and large: every level gets boxes
        boxes.append(torch.cat([xy, xy + wh + 1], 1))
    for out in (7, 14):
        theirs = TorchvisionMultiScaleRoIAlign(names, out, 2)
        ours = MultiScaleRoIAlign(names, out, 2)
        leaves = {k: v.clone().requires_grad_() for k, v in features.items()}
        mine = {k: v.clone().contiguous(memory_format=torch.channels_last).requires_grad_() for k, v in features.items()}
        want = theirs(leaves, boxes, image_shapes)
        got = ours(mine, boxes, image_shapes)
        levels = theirs.map_levels(boxes)
        assert len(set(levels.tolist())) == 4
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
        upstream = torch.randn(want.shape, generator=g)
        (want * upstream).sum().backward()
        (got * upstream).sum().backward()
        for name in names:
            torch.testing.assert_close(mine[name].grad, leaves[name].grad, rtol=0, atol=2e-5)
        assert ours.scales == theirs.scales
        assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
        nchw = ours({k: v.contiguous() for k, v in features.items()}, boxes, image_shapes)
        assert nchw.is_contiguous()  # an NCHW network's heads get NCHW RoIs
        torch.testing.assert_close(nchw, want, rtol=0, atol=2e-6)
