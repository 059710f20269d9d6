"""Our ResNets against torchvision's: names, parameter counts, logits; and the paper's options."""
import pytest
import torch
import torchvision

from backbones import build_backbone, build_classifier
from backbones.resnet import BasicBlock, Bottleneck, StemMaxPool, ZeroPadShortcut
from backbone_testutils import randomize_norms


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth,size", [(18, 96), (34, 96), (50, 96), (101, 64), (152, 64)])
def test_same_logits_and_parameters_as_torchvision(depth, size):
    torch.manual_seed(depth)
    reference = randomize_norms(getattr(torchvision.models, f"resnet{depth}")(weights=None), seed=depth).eval()
    ours = build_classifier(f"resnet{depth}").eval()
    assert list(ours.state_dict()) == list(reference.state_dict())  # same names, same order
    assert n_params(ours) == n_params(reference)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().max() > 1e-2  # a real signal, not zeros
    assert (got - expected).abs().max().item() <= 1e-4


def test_resnet50_parameter_count():
    with torch.device("meta"):
        assert n_params(build_classifier("resnet50")) == 25_557_032


def test_dilation_equals_torchvision_replace_stride_with_dilation():
    for dilation, replace in (((1, 2), [False, False, True]), ((2, 4), [False, True, True])):
        reference = randomize_norms(torchvision.models.resnet50(replace_stride_with_dilation=replace)).eval()
        ours = build_classifier("resnet50", dilation=dilation).eval()
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert (ours(x) - reference(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dilation,strides", [((1, 1), (16, 32)), ((1, 2), (16, 16)), ((2, 4), (8, 8))])
def test_dilation_output_strides(dilation, strides):
    model = build_backbone("resnet18", dilation=dilation, out_features=["res4", "res5"]).eval()
    assert (model.strides["res4"], model.strides["res5"]) == strides
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert [out[k].shape[-1] for k in ("res4", "res5")] == [64 // s for s in strides]


def _projection_params(cin, cout):
    return cin * cout + 2 * cout  # 1x1 conv without bias + BN weight and bias


def test_shortcut_options_parameters():
    with torch.device("meta"):
        a, b, c = (build_classifier("resnet18", shortcut=s) for s in "ABC")
        plain = build_classifier("plain18")
    # B projects where the shape changes: the first block of res3, res4, res5.
    changes = [(64, 128), (128, 256), (256, 512)]
    assert n_params(b) - n_params(a) == sum(_projection_params(i, o) for i, o in changes)
    # A is parameter-free: exactly the plain network's parameters.
    assert n_params(a) == n_params(plain)
    assert not any(isinstance(m, torch.nn.Conv2d) for blk in a.modules() if isinstance(blk, BasicBlock)
                   for m in (blk.downsample.modules() if blk.downsample is not None else []))
    # C also projects every identity shortcut: both res2 blocks and the second block of res3..res5.
    identities = [(64, 64), (64, 64), (128, 128), (256, 256), (512, 512)]
    assert n_params(c) - n_params(b) == sum(_projection_params(i, o) for i, o in identities)
    assert all(blk.downsample is not None for blk in c.modules() if isinstance(blk, BasicBlock))


def test_option_a_is_zero_padded_subsampled_identity():
    x = torch.randn(2, 4, 7, 7)
    y = ZeroPadShortcut(4, 10, stride=2)(x)
    assert y.shape == (2, 10, 4, 4)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2]) and torch.equal(y[:, 4:], torch.zeros(2, 6, 4, 4))
    model = build_classifier("resnet50", shortcut="A").eval()  # bottleneck nets run with A too
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_plain_networks_have_no_shortcuts():
    model = build_classifier("plain34").eval()
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert len(blocks) == 16
    assert all(b.downsample is None and not b.residual for b in blocks)
    block = blocks[1]  # stride 1, same shape: a residual block would add its input
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        manual = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        assert torch.equal(block(x.clone()), manual)


def test_stride_placement():
    msra = build_classifier("resnet50", stride_in_1x1=True)
    tv = build_classifier("resnet50")
    assert msra.layer2[0].conv1.stride == (2, 2) and msra.layer2[0].conv2.stride == (1, 1)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)


def test_stem_max_pool_equals_max_pool2d_with_and_without_gradients():
    """Without a gradient the stem's pool runs in channels-last on the CPU: the same values, handed
    back in NCHW; with one it is nn.MaxPool2d itself (the gradients too)."""
    pool = StemMaxPool(kernel_size=3, stride=2, padding=1)
    torch.manual_seed(0)
    x = torch.randn(2, 8, 21, 30).round(decimals=1)  # rounded: ties in the windows
    expected = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    with torch.no_grad():
        got = pool(x)
    assert got.shape == (2, 8, 11, 15) and got.is_contiguous() and torch.equal(got, expected)
    x.requires_grad_(True)
    got = pool(x)
    grad = torch.arange(got.numel(), dtype=torch.float32).view_as(got)
    got.backward(grad)
    reference = x.detach().clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(reference, 3, 2, 1).backward(grad)
    assert torch.equal(got, expected) and torch.equal(x.grad, reference.grad)
    assert isinstance(build_backbone("resnet18").maxpool, StemMaxPool)


def test_zero_init_residual():
    model = build_classifier("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in model.modules() if isinstance(b, Bottleneck))
    with pytest.raises(ValueError, match="plain"):
        build_classifier("plain18", zero_init_residual=True)


def test_backbone_builds_only_needed_stages():
    model = build_backbone("resnet50", out_features=["stem", "res3"])
    assert not hasattr(model, "layer3") and not hasattr(model, "fc")
    assert model.output_shape() == {"stem": (64, 4), "res3": (512, 8)}
    with pytest.raises(ValueError, match="out_features"):
        build_backbone("resnet50", out_features=["res6"])


@pytest.mark.parametrize("norm", ["BN", "SyncBN", "FrozenBN", "GN"])
def test_norms(norm):
    model = build_backbone("resnet18", norm=norm, out_features=["res2"])
    expected = {"BN": torch.nn.BatchNorm2d, "SyncBN": torch.nn.SyncBatchNorm,
                "FrozenBN": torchvision.ops.misc.FrozenBatchNorm2d, "GN": torch.nn.GroupNorm}[norm]
    assert type(model.bn1) is expected
    if norm != "SyncBN":  # SyncBN's forward needs a process group in training mode
        assert model(torch.randn(2, 3, 32, 32))["res2"].shape == (2, 64, 8, 8)
