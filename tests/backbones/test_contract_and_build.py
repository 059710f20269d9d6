"""The backbone contract for every kind of backbone, and the build entry points."""
import math

import pytest
import torch

from backbones import (BackboneConfig, FPNOptions, available_networks, build_backbone, build_classifier,
                       build_resnet_stage, load_weights, timm_model_name)
from engine.config import ConfigError


def check_contract(model, size=64):
    model.eval()
    assert set(model.out_channels) == set(model.strides) == set(model.out_features)
    assert {k: tuple(v) for k, v in model.output_shape().items()} == {
        k: (model.out_channels[k], model.strides[k]) for k in model.out_features}
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert isinstance(out, dict) and list(out) == model.out_features
    for name, t in out.items():
        side = math.ceil(size / model.strides[name])
        assert tuple(t.shape) == (1, model.out_channels[name], side, side), name
    assert set(model.input_norm) == {"color", "scale", "mean", "std"}
    return out


@pytest.mark.parametrize("name,options", [
    ("resnet50", {"out_features": ["stem", "res2", "res3", "res4", "res5"]}),
    ("plain18", {}),
    ("cifar_resnet20", {"out_features": ["stem", "res2", "res3", "res4"]}),
    ("timm:resnet18", {}),
    ("timm:mobilenetv3_small_100", {}),
    ("timm:efficientnet_b0", {"out_features": ["stem", "res3", "res5"]}),
])
def test_backbone_contract(name, options):
    model = build_backbone(name, **options)
    check_contract(model)
    if "out_features" in options:
        assert model.out_features == options["out_features"]


def test_timm_names_by_stride_and_dilation():
    model = build_backbone("timm:resnet18")
    assert model.out_features == ["res2", "res3", "res4", "res5"]
    assert model.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert model.out_channels == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    dilated = build_backbone("timm:resnet18", dilation=(1, 2), out_features=["res4", "res5"])
    assert dilated.strides == {"res4": 16, "res5": 16}
    check_contract(dilated)
    with pytest.raises(ValueError, match="timm has no model 'resnet5'.*resnet50"):
        build_backbone("timm:resnet5")
    with pytest.raises(ValueError, match="stride_in_1x1"):
        build_backbone("timm:resnet18", stride_in_1x1=True)


def test_timm_classifier():
    model = build_classifier("timm:resnet18", num_classes=7)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert model.input_norm["color"] == "RGB"


def test_every_name_builds():
    with torch.device("meta"):
        for name in available_networks():
            model = build_classifier(name, num_classes=10)
            assert model.num_classes == 10
    assert {"resnet152", "plain152", "cifar_resnet1202", "cifar_plain110"} <= set(available_networks())


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match=r"unknown network 'resnet51'.*closest: resnet50"):
        build_backbone("resnet51")
    with pytest.raises(ValueError, match="unknown options.*top_block"):
        build_backbone("resnet18", top_block="p6p7")  # an FPN option: fpn=FPNOptions(top_block=...)
    with pytest.raises(ConfigError, match="weights: file not found: x.pth"):
        build_backbone("resnet18", weights="x.pth")
    with pytest.raises(ConfigError, match="norm: 'XN'"):
        build_classifier(BackboneConfig(name="resnet18"), 10, norm="XN")


def test_a_name_with_overrides_is_the_config():
    by_name = build_backbone("resnet18", norm="FrozenBN", freeze_at=2, dilation=[1, 2])
    by_cfg = build_backbone(BackboneConfig(name="resnet18", norm="FrozenBN", freeze_at=2, dilation=[1, 2]))
    assert by_name.out_features == by_cfg.out_features == ["res2", "res3", "res4", "res5"]
    assert by_name.strides == by_cfg.strides and by_name.load_report is None
    assert [k for k in by_name.state_dict()] == [k for k in by_cfg.state_dict()]
    # a bare name returns the network's own stages; the config default res2..res5 would not fit CIFAR
    assert build_backbone("cifar_resnet20").out_features == ["res2", "res3", "res4"]
    # every config field reaches the network: none is copied by hand on the way
    assert build_backbone(BackboneConfig(name="resnet18"), shortcut="C").layer1[0].downsample is not None
    assert build_backbone(BackboneConfig(name="resnet18")).layer1[0].downsample is None


def test_timm_prefix_parsed_in_one_place():
    assert timm_model_name("timm:convnext_tiny") == "convnext_tiny" and timm_model_name("resnet50") is None
    with pytest.raises(ValueError, match="freeze_at=2 applies to our ResNets"):
        build_classifier("timm:resnet18", 10, freeze_at=2)
    with pytest.raises(ValueError, match="not one of our ResNets"):
        build_resnet_stage("timm:resnet18", "res5")


def test_from_config_loads_weights_and_builds_fpn(tmp_path):
    reference = build_classifier("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    cfg = BackboneConfig(name="resnet18", weights=str(path), norm="FrozenBN", freeze_at=2)
    model = build_backbone(cfg)
    assert model.load_report.format == "torchvision" and not model.load_report.missing
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not model.layer1[0].conv1.weight.requires_grad and model.layer2[0].conv1.weight.requires_grad
    fpn = build_backbone(cfg, fpn=FPNOptions(top_block="p6p7"))
    assert fpn.out_features == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert torch.equal(fpn.bottom_up.conv1.weight, reference.conv1.weight)
    assert fpn.load_report.missing and all(k.startswith("fpn.") for k in fpn.load_report.missing)
    classifier = build_classifier(BackboneConfig(name="cifar_resnet20", shortcut="A"), 10)
    assert classifier.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    loaded = build_classifier(cfg)
    assert torch.equal(loaded.fc.weight, reference.fc.weight) and not loaded.load_report.missing


def test_resnet_stage_for_c4_head(tmp_path):
    res5 = build_resnet_stage("resnet50", "res5", stride_in_1x1=True)
    backbone = build_backbone("resnet50")
    layer4 = [k[len("layer4."):] for k in backbone.state_dict() if k.startswith("layer4.")]
    assert list(res5.state_dict()) == layer4
    assert (res5.in_channels, res5.out_channels) == (1024, 2048)
    assert res5[0].conv1.stride == (2, 2)
    # built alone as the whole network builds it: dilation, freezing, norm
    dilated = build_resnet_stage(BackboneConfig(name="resnet18", dilation=[1, 2], norm="FrozenBN", freeze_at=5))
    whole = build_backbone("resnet18", dilation=[1, 2], norm="FrozenBN", freeze_at=5)
    assert [m.dilation for m in dilated.modules() if isinstance(m, torch.nn.Conv2d)] == \
        [m.dilation for m in whole.layer4.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(p.requires_grad for p in dilated.parameters())
    with pytest.raises(ValueError, match="res3, res4, res5"):
        build_resnet_stage("resnet18", "res2")
    # weights: the stage's tensors of a whole-network file
    reference = build_classifier("resnet18")
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    loaded = build_resnet_stage("resnet18", "res5", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(loaded[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not loaded.load_report.missing


def test_timm_checkpoint_loads_into_timm_backbone():
    import timm

    torch.manual_seed(0)
    # features_only renames stages.0 to stages_0: the loader accepts the original names
    source = timm.create_model("convnext_atto", pretrained=False).eval()
    backbone = build_backbone("timm:convnext_atto").eval()
    report = load_weights(backbone, {"state_dict": source.state_dict()})
    assert report.mapping == [("", "model.")] and not report.missing
    assert all(k.startswith("head.") for k in report.unexpected)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x)["res5"], source.forward_features(x), atol=1e-5)


def test_width_scales_every_stage_and_the_weights_follow(tmp_path):
    """``width`` (the demo's ResNet-18 at 32): every stage in proportion, a quarter of the
    multiply-adds, the same module names; its weights load into the same width and are refused by
    the paper's width with the mismatch named."""
    from backbones.flops import count_macs

    half = build_classifier("resnet18", 8, width=32)
    full = build_classifier("resnet18", 8)
    assert half.conv1.out_channels == 32 and half.fc.in_features == 256
    assert [m.conv1.out_channels for m in (half.layer1[0], half.layer2[0], half.layer3[0], half.layer4[0])] == \
        [32, 64, 128, 256]
    assert set(half.state_dict()) == set(full.state_dict())
    ratio = count_macs(half, (1, 3, 224, 224)) / count_macs(full, (1, 3, 224, 224))
    assert 0.24 < ratio < 0.27, ratio
    assert build_backbone("resnet18", width=32).out_channels == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}
    assert build_resnet_stage("resnet50", "res5", width=32).out_channels == 1024
    assert build_classifier("cifar_resnet20", 10, width=32).fc.in_features == 128  # 32, 64, 128

    path = tmp_path / "half.pth"
    torch.save(half.state_dict(), path)
    loaded = build_backbone(BackboneConfig(name="resnet18", width=32, weights=str(path)))
    assert loaded.load_report.loaded and not loaded.load_report.mismatched
    assert torch.equal(loaded.layer3[1].conv2.weight, half.layer3[1].conv2.weight)
    with pytest.raises(ValueError, match="shape"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    with pytest.raises(ValueError, match="width"):
        BackboneConfig(name="resnet18", width=0).validate()
    with pytest.raises(ValueError, match="width"):
        build_backbone("timm:resnet18", width=32)
