"""Every classification config parses against ClsConfig; bad keys fail with the key's name."""
from __future__ import annotations

import glob
import os

import pytest

from classification.config import ClsConfig
from engine.config import ConfigError, load_config

from conftest import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "classification", "*.yaml"))) + \
    [os.path.join(ROOT, "configs", "demo", "shapes_cls.yaml")]


def _load(path, overrides=()):
    try:
        return load_config(ClsConfig, path, overrides)
    except ConfigError as e:
        # Weights named in an example config are the user's to provide; everything else must parse.
        if "weights: file not found" not in str(e):
            raise
        return load_config(ClsConfig, path, list(overrides) + ["model.backbone.weights=null"])


def test_the_expected_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS}
    expected = {f"resnet{d}_imagenet_paper.yaml" for d in (18, 34, 50, 101, 152)}
    expected |= {f"cifar_{k}{d}.yaml" for k in ("resnet", "plain") for d in (20, 32, 44, 56, 110)}
    expected |= {"resnet50_imagenet_modern.yaml", "finetune_imagefolder.yaml", "shapes_resnet18.yaml", "shapes_cls.yaml"}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_parses(path):
    cfg = _load(path)
    name = os.path.basename(path)
    if "imagenet_paper" in name:
        s = cfg.solver
        assert (s.base_lr, s.momentum, s.weight_decay, s.ims_per_batch, s.max_iter, s.lr_schedule, s.gamma) == \
            (0.1, 0.9, 1e-4, 256, 600000, "plateau", 0.1)
        assert cfg.data.recipe == "paper" and cfg.data.scale_range == [256, 480] and cfg.data.pca_lighting == 0.1
        assert cfg.model.backbone.name == "resnet" + name.split("_")[0][6:] and cfg.test.eval_period > 0
    if name.startswith("cifar_"):
        s = cfg.solver
        assert (s.base_lr, s.steps, s.max_iter, s.ims_per_batch, s.weight_decay) == (0.1, [32000, 48000], 64000, 128, 1e-4)
        assert cfg.model.backbone.shortcut == "A" and cfg.data.recipe == "cifar" and cfg.data.pad == 4
        assert cfg.model.backbone.name == "cifar_" + name[len("cifar_"):-len(".yaml")]
    if name == "resnet50_imagenet_modern.yaml":
        assert cfg.solver.lr_schedule == "cosine" and cfg.solver.warmup_iters > 0 and cfg.solver.ema
        assert cfg.solver.amp == "auto" and cfg.data.label_smoothing > 0 and cfg.data.randaugment
        assert cfg.data.mixup > 0 and cfg.data.cutmix > 0


def test_unknown_key_and_bad_value_name_the_key():
    path = os.path.join(ROOT, "configs", "classification", "shapes_resnet18.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'data\.recipee' \(closest valid: recipe"):
        load_config(ClsConfig, path, ["data.recipee=paper"])
    with pytest.raises(ConfigError, match=r"data\.recipe: 'papr' is not a valid value \(closest valid: paper"):
        load_config(ClsConfig, path, ["data.recipe=papr"])
    with pytest.raises(ConfigError, match=r"data\.train\[0\]: give exactly one of 'root'"):
        load_config(ClsConfig, path, ["data.train=[{}]"])
    with pytest.raises(ConfigError, match=r"test\.ten_crop: choose 10-crop or multi-scale"):
        load_config(ClsConfig, path, ["test.ten_crop=true", "test.multiscale=[224]"])
