"""Segmentation models: output sizes, normalisation inside the model, fine-tuning from checkpoints."""
import pytest
import torch
from torch import nn

from backbones import MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM, build_classifier
from backbones.config import BackboneConfig
from engine.data import DataError
from segmentation.config import SegModelConfig
from segmentation.models import build_segmentation_model
from segmentation.weights import load_segmentation_weights


def config(head="semantic_fpn", num_classes=5, **kw):
    dilation = [1, 1] if head == "semantic_fpn" else [1, 2]
    backbone = kw.pop("backbone", BackboneConfig(name="resnet18", dilation=dilation))
    return SegModelConfig(head=head, backbone=backbone, num_classes=num_classes, head_channels=16, fpn_channels=32,
                          **kw)


@pytest.mark.parametrize("head", ["fcn", "deeplabv3", "semantic_fpn"])
def test_outputs_at_input_size_for_any_size(head):
    torch.manual_seed(0)
    model = build_segmentation_model(config(head, aux_loss=True, head_norm="GN")).eval()
    out = model(torch.randint(0, 256, (2, 3, 70, 90), dtype=torch.uint8))
    assert out["out"].shape == out["aux"].shape == (2, 5, 70, 90)
    assert any(isinstance(m, nn.GroupNorm) for m in model.classifier.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.classifier.modules())


def test_semantic_fpn_logits_are_float32_under_bf16_autocast():
    """The semantic FPN's classifier and the upsampling of its logits run in fp32 under autocast: in
    bf16 the logits keep ~3 digits, and where two classes meet that moves the boundary."""
    torch.manual_seed(0)
    model = build_segmentation_model(config(head_norm="GN")).eval()
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    head = model.classifier
    seen = {}
    head.predictor.register_forward_hook(lambda m, inputs, out: seen.update(input=inputs[0], out=out))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)["out"]
    assert out.dtype == torch.float32
    assert seen["out"].dtype == torch.float32
    # the prediction is the fp32 1x1 convolution of the (bf16) summed branches, not a rounded one
    expected = nn.functional.conv2d(seen["input"].float(), head.predictor.weight, head.predictor.bias)
    torch.testing.assert_close(seen["out"], expected, rtol=1e-6, atol=1e-6)


def test_normalisation_is_applied_inside_the_model():
    torch.manual_seed(0)
    model = build_segmentation_model(config()).eval()
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(images)["out"], model(images.float())["out"]
        model.input_norm = MSRA_INPUT_NORM
        c = model(images)["out"]
    assert torch.equal(a, b)  # uint8 or float 0-255: the same
    assert not torch.allclose(a, c)  # the weights' normalisation is what the model applies
    assert model.backbone.bottom_up.input_norm == MSRA_INPUT_NORM


def test_whole_checkpoint_for_other_classes_loads_all_but_the_classifier(tmp_path):
    torch.manual_seed(0)
    source = build_segmentation_model(config(num_classes=7))
    path = str(tmp_path / "seg.pth")
    torch.save({"model": source.state_dict(), "meta": {"input_norm": MSRA_INPUT_NORM}}, path)
    target = build_segmentation_model(config(num_classes=5))
    report = load_segmentation_weights(target, path)
    assert {k for k, _, _ in report.mismatched} == {"classifier.predictor.weight", "classifier.predictor.bias"}
    assert not report.missing and not report.unexpected
    assert torch.equal(target.backbone.bottom_up.layer3[0].conv1.weight, source.backbone.bottom_up.layer3[0].conv1.weight)
    assert torch.equal(target.classifier.scale_heads["p4"][0][0].weight, source.classifier.scale_heads["p4"][0][0].weight)
    assert target.input_norm == MSRA_INPUT_NORM
    with pytest.raises(DataError, match="classifier.predictor.weight"):
        load_segmentation_weights(build_segmentation_model(config(num_classes=5)), path, strict=True)


def test_backbone_from_a_classification_checkpoint(tmp_path):
    torch.manual_seed(0)
    classifier = build_classifier("resnet18", 10)
    path = str(tmp_path / "cls.pth")
    torch.save({"model": classifier.state_dict(), "meta": {"input_norm": TORCHVISION_INPUT_NORM}}, path)
    for head in ("fcn", "semantic_fpn"):
        cfg = config(head)
        cfg.backbone.weights = path
        model = build_segmentation_model(cfg)
        bottom_up = model.backbone.bottom_up if head == "semantic_fpn" else model.backbone
        assert torch.equal(bottom_up.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
        assert model.backbone_load_report.unexpected == ["fc.weight", "fc.bias"]


def test_semantic_fpn_head_equals_upsampling_every_level_on_its_own():
    """Panoptic FPN upsamples each level's branch to stride 4 and sums them; the head sums the coarser
    branches at stride 8 and upsamples once. Interpolation is linear, so the logits are the same (odd
    sizes: the 2x steps are not exact)."""
    torch.manual_seed(0)
    model = build_segmentation_model(config(head_norm="GN")).eval()
    head = model.classifier
    nn.init.normal_(head.predictor.weight)  # a real signal (it starts at std 0.001)
    sizes = [(18, 23), (9, 12), (5, 6), (3, 3)]
    features = {f: torch.randn(2, 32, *size) for f, size in zip(head.in_features, sizes)}
    total = 0
    for level, f in enumerate(head.in_features):
        x = features[f]
        for k, stage in enumerate(head.scale_heads[f]):
            x = stage(x)
            if level - k > 0:
                x = nn.functional.interpolate(x, size=sizes[level - k - 1], mode="bilinear", align_corners=False)
        total = total + x
    expected = head.predictor(total)
    with torch.no_grad():
        got = head(features)
    assert got.shape == (2, 5, 18, 23) and expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
