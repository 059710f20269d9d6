"""CIFAR ResNets against the paper's Table 6 and multiply-adds against Table 1."""
import pytest
import torch

from backbones import build_backbone, build_classifier
from backbones.flops import count_macs, count_parameters

TABLE6_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
TABLE1_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}


@pytest.mark.parametrize("depth", sorted(TABLE6_PARAMS_M))
def test_cifar_parameters_match_table6(depth):
    with torch.device("meta"):
        model = build_classifier(f"cifar_resnet{depth}", num_classes=10)
    # The paper rounds to 2 digits (0.27M) or 3 (19.4M): equal after the same rounding.
    paper = TABLE6_PARAMS_M[depth]
    digits = len(str(paper).split(".")[1])
    assert round(count_parameters(model) / 1e6, digits) == paper
    assert model.shortcut == "A"


def test_cifar_plain_equals_resnet_parameters_and_layout():
    with torch.device("meta"):
        plain, res = build_classifier("cifar_plain56", 10), build_classifier("cifar_resnet56", 10)
    assert count_parameters(plain) == count_parameters(res)  # option A shortcuts are free
    assert sum(1 for m in res.modules() if isinstance(m, torch.nn.Conv2d)) + 1 == 56  # + fc: 6n+2 layers


def test_cifar_backbone_contract():
    model = build_backbone("cifar_resnet20").eval()
    assert model.out_features == ["res2", "res3", "res4"]
    assert model.strides == {"res2": 1, "res3": 2, "res4": 4}
    assert model.out_channels == {"res2": 16, "res3": 32, "res4": 64}
    out = model(torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 16, 32, 32), "res3": (2, 32, 16, 16), "res4": (2, 64, 8, 8)}


def test_macs_are_multiply_adds():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (2, 3, 8, 8)) == 8 * 8 * 8 * 3 * 9  # per image, one multiply-add each


@pytest.mark.parametrize("depth", sorted(TABLE1_GMACS))
def test_macs_within_5_percent_of_table1(depth):
    with torch.device("meta"):  # no memory, no arithmetic: ResNet-152 counts in a fraction of a second
        model = build_classifier(f"resnet{depth}", stride_in_1x1=True)
    gmacs = count_macs(model, (1, 3, 224, 224)) / 1e9
    assert abs(gmacs - TABLE1_GMACS[depth]) / TABLE1_GMACS[depth] < 0.05, gmacs
