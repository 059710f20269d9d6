import pytest
import torch
from torch import nn

from engine.config import SolverConfig
from engine.ema import ModelEMA
from engine.optim import build_optimizer, lr_mult_for


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False))
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def groups_by_param(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_no_decay_for_norm_and_bias_and_lr_mults():
    model = Net()
    model.backbone[0].weight.requires_grad_(False)  # frozen: left out
    s = SolverConfig(base_lr=0.1, weight_decay=1e-4, no_decay_norm_bias=True)
    opt = build_optimizer(model, s, lr_mults={"backbone": 0.1, "backbone.2": 0.5})
    got = groups_by_param(opt, model)
    assert "backbone.0.weight" not in got
    assert got["backbone.0.bias"] == pytest.approx((0.01, 0.0))
    assert got["backbone.1.weight"] == pytest.approx((0.01, 0.0))  # BN weight
    assert got["backbone.2.weight"] == pytest.approx((0.05, 1e-4))  # longest prefix wins
    assert got["head.0.weight"] == pytest.approx((0.1, 1e-4))
    assert got["head.0.bias"] == pytest.approx((0.1, 0.0))
    assert got["head.1.weight"] == pytest.approx((0.1, 0.0))  # LayerNorm weight
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    # without the option every parameter decays
    got = groups_by_param(build_optimizer(model, SolverConfig(weight_decay=1e-4)), model)
    assert {wd for _, wd in got.values()} == {1e-4}


def test_adamw_and_prefix_boundaries():
    model = Net()
    opt = build_optimizer(model, SolverConfig(optimizer="AdamW", base_lr=1e-3, betas=[0.8, 0.99]))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    assert lr_mult_for("backbone.1.weight", {"back": 0.1}) == 1.0  # whole names only
    assert lr_mult_for("backbone.1.weight", {"backbone.": 0.1}) == 0.1
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(Net().requires_grad_(False), SolverConfig())


def test_ema_matches_hand_computed_average():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    expected = None
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        ema.update(model, step)
        w = model.weight.detach().clone()
        expected = w if expected is None else 0.9 * expected + 0.1 * w  # step 1 copies the weights
        torch.testing.assert_close(ema.module.weight, expected)
    restored = ModelEMA(nn.Linear(3, 2), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight)
