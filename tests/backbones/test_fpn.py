"""FPN: equal to torchvision's BackboneWithFPN for the same weights; the contract."""
import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from backbones import FPNOptions, build_backbone, load_weights
from backbone_testutils import max_rel_diff, randomize_norms


def test_equals_torchvision_fasterrcnn_backbone():
    torch.manual_seed(0)
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    randomize_norms(detector.backbone)
    ours = build_backbone("resnet50", fpn=True, norm="FrozenBN")
    report = load_weights(ours, detector.state_dict())
    # backbone.body.* -> bottom_up.*, backbone.fpn.* -> fpn.*, everything of ours loaded
    assert report.mapping == [("backbone.body.", "bottom_up."), ("backbone.", "")]
    assert not report.missing and not report.mismatched
    assert all(k.startswith(("rpn.", "roi_heads.")) for k in report.unexpected)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = detector.backbone.eval()(x)
        got = ours.eval()(x)
    assert list(got) == ["p2", "p3", "p4", "p5", "p6"] and list(expected) == ["0", "1", "2", "3", "pool"]
    for (name, a), b in zip(got.items(), expected.values()):
        # untrained torchvision detectors use BatchNorm2d, ours FrozenBN: same map, other rounding
        assert a.shape == b.shape and max_rel_diff(a, b) <= 1e-5, name


def test_equals_backbone_with_fpn_resnet18_subset():
    reference = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                    returned_layers=[2, 3, 4])
    randomize_norms(reference)
    ours = build_backbone("resnet18", fpn=FPNOptions(in_features=["res3", "res4", "res5"]), norm="FrozenBN")
    report = load_weights(ours, reference.state_dict())
    assert report.mapping == [("body.", "bottom_up."), ("", "")] and not report.missing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x).values(), reference.eval()(x).values()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("top_block,names", [("maxpool", ["p2", "p3", "p4", "p5", "p6"]),
                                             ("p6p7", ["p2", "p3", "p4", "p5", "p6", "p7"]),
                                             (None, ["p2", "p3", "p4", "p5"])])
def test_contract(top_block, names):
    model = build_backbone("resnet18", fpn=FPNOptions(top_block=top_block, out_channels=64)).eval()
    assert model.out_features == names
    assert model.strides == {n: 2 ** int(n[1:]) for n in names}
    out = model(torch.randn(1, 3, 128, 128))
    assert list(out) == names
    for name, t in out.items():
        assert t.shape == (1, 64, 128 // model.strides[name], 128 // model.strides[name])
    assert model.size_divisibility == 32
    model.input_norm = {"color": "BGR", "scale": 255.0, "mean": [1, 2, 3], "std": [1, 1, 1]}
    assert model.bottom_up.input_norm["color"] == "BGR"  # one record, on the bottom-up network


def test_fpn_on_a_timm_backbone():
    model = build_backbone("timm:mobilenetv3_small_100", fpn=FPNOptions(out_channels=32)).eval()
    assert model.bottom_up.out_channels["res5"] == 576
    out = model(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f"p{i}": (1, 32, 64 // 2 ** i, 64 // 2 ** i) for i in range(2, 7)}


def test_fpn_needs_its_inputs():
    from backbones import FPN

    with pytest.raises(ValueError, match="res2"):
        FPN(build_backbone("resnet18", out_features=["res3", "res4", "res5"]))
