"""prepare_for_inference: folded norms, channels-last, outputs equal to the unfused model."""
import copy

import pytest
import torch

from backbones import FPNOptions, build_backbone, build_classifier, prepare_for_inference
from backbones.fast import FusedResidualBlock, onednn_fusion_available
from backbone_testutils import max_rel_diff, randomize_norms

CASES = {
    "classifier resnet50 (BN)": lambda: build_classifier("resnet50", stride_in_1x1=True),
    "backbone resnet18 (FrozenBN, frozen stem+res2)": lambda: build_backbone(
        "resnet18", norm="FrozenBN", freeze_at=2, out_features=["stem", "res2", "res3", "res4", "res5"]),
    "FPN resnet18": lambda: build_backbone("resnet18", fpn=FPNOptions(norm="BN")),
    "cifar_resnet20 (option A)": lambda: build_classifier("cifar_resnet20", 10),
    "resnet18 shortcut C, dilated": lambda: build_backbone("resnet18", shortcut="C", dilation=(1, 2)),
    "timm:resnet18": lambda: build_backbone("timm:resnet18"),
    "plain18": lambda: build_classifier("plain18"),
}


def _norms(model):
    return [m for m in model.modules() if hasattr(m, "running_var")]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_unfused(case, channels_last):
    torch.manual_seed(0)
    model = randomize_norms(CASES[case]()).eval()
    reference = copy.deepcopy(model)
    fast = prepare_for_inference(model, channels_last=channels_last)
    assert fast is model and not fast.training
    assert fast.folded_norms > 0 and not _norms(fast)  # every BN/FrozenBN folded away
    if hasattr(fast, "conv1"):
        assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    ours = not case.startswith("timm")
    assert (fast.fused_blocks > 0) == (ours and onednn_fusion_available())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), fast(x)
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        pairs = [(got[k], expected[k]) for k in expected]
    else:
        pairs = [(got, expected)]
    for a, b in pairs:
        assert max_rel_diff(a, b) <= 1e-4


def test_group_norm_is_left_alone():
    model = build_backbone("resnet18", norm="GN", out_features=["res2"])
    reference = copy.deepcopy(model).eval()
    prepare_for_inference(model, channels_last=False)
    assert model.folded_norms == 0 and isinstance(model.bn1, torch.nn.GroupNorm)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)["res2"], reference(x)["res2"])


@pytest.mark.skipif(not onednn_fusion_available(), reason="no oneDNN fused convolutions in this torch build")
def test_fused_blocks_fall_back_when_gradients_are_needed():
    model = prepare_for_inference(randomize_norms(build_classifier("resnet18", num_classes=3)))
    assert isinstance(model.layer1[0], FusedResidualBlock) and "layer1.0.conv1.weight" in model.state_dict()
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with torch.no_grad():
        expected = model(x)
    got = model(x)  # autograd on: the eager path (the fused kernels have no backward)
    got.sum().backward()
    assert x.grad is not None and max_rel_diff(got.detach(), expected) <= 1e-5
