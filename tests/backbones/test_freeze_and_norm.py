"""freeze_at: frozen stages get no gradient and frozen statistics never move; norm conversions."""
import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from backbones import build_backbone, build_classifier, convert_frozen_batchnorm, get_norm
from backbone_testutils import randomize_norms

STAGE_MODULES = {1: ["conv1", "bn1"], 2: ["layer1"], 3: ["layer2"], 4: ["layer3"], 5: ["layer4"]}


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_frozen_stages_get_no_gradient_and_keep_statistics(freeze_at):
    torch.manual_seed(0)
    model = build_classifier("resnet18", freeze_at=freeze_at, num_classes=4).train()
    frozen = [m for k in range(1, freeze_at + 1) for m in STAGE_MODULES[k]]
    trainable = [m for k in range(freeze_at + 1, 6) for m in STAGE_MODULES[k]] + ["fc"]
    stats_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    for _ in range(2):
        model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        if top in frozen:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert top in trainable and p.grad is not None and p.grad.abs().sum() > 0, name
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) or isinstance(m, FrozenBatchNorm2d):
            is_frozen = name.split(".")[0] in frozen
            assert isinstance(m, FrozenBatchNorm2d) == is_frozen, name
            moved = not torch.equal(stats_before[name + ".running_mean"], m.running_mean)
            assert moved != is_frozen, name  # trainable BN statistics do move in train mode


def test_frozen_bn_statistics_never_change_in_train_mode():
    model = randomize_norms(build_backbone("resnet18", norm="FrozenBN")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        sum(v.sum() for v in model(torch.randn(2, 3, 32, 32)).values()).backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_frozen_model_loads_torchvision_weights_and_matches_bn_eval():
    reference = randomize_norms(torchvision.models.resnet18(weights=None)).eval()
    frozen = build_classifier("resnet18", norm="FrozenBN")
    assert set(frozen.state_dict()) == {k for k in reference.state_dict() if "num_batches_tracked" not in k}
    frozen.load_state_dict(reference.state_dict())  # num_batches_tracked is dropped by FrozenBN
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (frozen.train()(x) - reference(x)).abs().max().item() <= 1e-4  # even in train mode


def test_convert_frozen_batchnorm_copies_statistics():
    bn = randomize_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(8))).eval()
    frozen = convert_frozen_batchnorm(bn)
    assert isinstance(frozen[0], FrozenBatchNorm2d) and frozen[0].eps == 1e-5
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        assert (frozen(x) - bn(x)).abs().max().item() < 1e-5
    single = convert_frozen_batchnorm(torch.nn.BatchNorm2d(8))
    assert isinstance(single, FrozenBatchNorm2d)


def test_get_norm():
    assert isinstance(get_norm("GN", 256), torch.nn.GroupNorm) and get_norm("GN", 256).num_groups == 32
    assert get_norm("GN", 16).num_groups == 16  # CIFAR's 16-channel stage
    with pytest.raises(ValueError, match="BN, SyncBN, FrozenBN, GN"):
        get_norm("LN", 8)
    with pytest.raises(ValueError, match="freeze_at"):
        build_backbone("resnet18", freeze_at=6)


def _is_frozen_bn(module):
    return type(module).__name__ in ("FrozenBatchNorm2d", "FrozenBatchNormAct2d")


def test_timm_freeze_at():
    resnet = build_backbone("timm:resnet18", freeze_at=2)
    for name, p in resnet.named_parameters():
        assert p.requires_grad == (name.split(".")[1] not in ("conv1", "layer1")), name
    assert _is_frozen_bn(resnet.model.bn1) and _is_frozen_bn(resnet.model.layer1[0].bn1)
    assert type(resnet.model.layer2[0].bn1) is torch.nn.BatchNorm2d

    effnet = build_backbone("timm:efficientnet_b0", freeze_at=1)  # stem: everything before res2's producer
    for name, p in effnet.named_parameters():
        assert p.requires_grad == (not name.startswith(("model.conv_stem", "model.blocks.0."))), name
    assert _is_frozen_bn(effnet.model.bn1) and _is_frozen_bn(effnet.model.blocks[0][0].bn1)
    assert not _is_frozen_bn(effnet.model.blocks[1][0].bn1)
