"""torchvision's fcn_resnet50 and deeplabv3_resnet50 convert and reproduce their outputs in our model."""
import pytest
import torch
from torchvision.models.segmentation import deeplabv3_resnet50, fcn_resnet50

from backbones import TORCHVISION_INPUT_NORM, normalize_image
from backbones.config import BackboneConfig
from segmentation.config import SegModelConfig
from segmentation.weights import convert_torchvision_segmentation, detect_arch
from segmentation.data import VOC_CLASSES
from segmentation.models import build_segmentation_model


def randomised(model):
    """Non-trivial BN statistics and affine parameters, so a wrong mapping shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch,builder,head", [("fcn_resnet50", fcn_resnet50, "fcn"),
                                               ("deeplabv3_resnet50", deeplabv3_resnet50, "deeplabv3")])
def test_converted_weights_reproduce_torchvision(arch, builder, head):
    torch.manual_seed(0)
    theirs = randomised(builder(weights=None, weights_backbone=None, aux_loss=True))
    state, meta = convert_torchvision_segmentation(theirs.state_dict(), arch)
    assert detect_arch(theirs.state_dict()) == arch
    assert meta["num_classes"] == 21 and meta["class_names"] == VOC_CLASSES and meta["aux_loss"]
    assert meta["input_norm"] == TORCHVISION_INPUT_NORM and meta["head"] == head

    cfg = SegModelConfig(head=head, backbone=BackboneConfig(name="resnet50", dilation=[2, 4]),
                         num_classes=21, aux_loss=True)
    ours = build_segmentation_model(cfg).eval()
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours.input_norm = meta["input_norm"]

    # ours takes RGB 0-255 and normalises itself; torchvision takes the normalised image
    image = torch.randint(0, 256, (2, 3, 72, 88), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        expected = theirs(normalize_image(image / 255.0, TORCHVISION_INPUT_NORM))
        got = ours(image.to(torch.uint8))
    for key in ("out", "aux"):
        assert got[key].shape == expected[key].shape == (2, 21, 72, 88)
        diff = (got[key] - expected[key]).abs().max().item()
        assert diff <= 1e-4, f"{key}: max abs diff {diff}"
        assert expected[key].std() > 1e-2  # the outputs are not trivially constant


def test_wrong_arch_and_foreign_files_are_refused():
    theirs = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False).state_dict()
    with pytest.raises(ValueError, match="not deeplabv3_resnet50"):
        convert_torchvision_segmentation(theirs, "deeplabv3_resnet50")
    with pytest.raises(ValueError, match="outside backbone"):
        convert_torchvision_segmentation({"fc.weight": torch.zeros(2, 2), **theirs}, "fcn_resnet50")
    state, meta = convert_torchvision_segmentation({"model": theirs})  # a references/ checkpoint, arch auto
    assert meta["head"] == "fcn" and not meta["aux_loss"] and state.keys() == theirs.keys()
