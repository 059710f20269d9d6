"""The shipped segmentation configs load, follow torchvision's recipe, and build what they say."""
import os

import pytest
import torch

from engine.config import ConfigError, load_config
from segmentation.config import SegConfig
from segmentation.models import build_segmentation_model

from seg_testutils import REPO

SEMANTIC = ("fcn_R50_coco.yaml", "deeplabv3_R50_coco.yaml", "deeplabv3_R101_coco.yaml", "semantic_fpn_R50_coco.yaml")
CONFIGS = [os.path.join(REPO, "configs", "segmentation", name) for name in SEMANTIC]
NO_FILES = ["model.backbone.weights=null"]  # the ImageNet backbone files are not part of the repository


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_recipe_values(path):
    cfg = load_config(SegConfig, path, NO_FILES)
    s, d, m = cfg.solver, cfg.data, cfg.model
    assert (s.optimizer, s.base_lr, s.momentum, s.weight_decay) == ("SGD", 0.02, 0.9, 1e-4)
    assert (s.lr_schedule, s.poly_power, s.ims_per_batch, s.reference_batch, s.max_epochs) == ("poly", 0.9, 32, 32, 30)
    assert (d.base_size, d.crop_size, d.scale_range, d.min_train_area) == (520, 480, [0.5, 2.0], 1000)
    assert m.num_classes == 21 and all(ds.coco.categories == "voc" for ds in d.train + d.val)
    if m.head == "semantic_fpn":
        assert m.backbone.dilation == [1, 1] and not m.aux_loss
    else:
        assert m.backbone.dilation == [2, 4] and m.aux_loss and m.aux_weight == 0.5 and m.aux_lr_mult == 10.0
    assert m.backbone.name == ("resnet101" if "R101" in path else "resnet50")


def test_a_recipe_builds_the_torchvision_layout():
    cfg = load_config(SegConfig, os.path.join(REPO, "configs", "segmentation", "fcn_R50_coco.yaml"), NO_FILES)
    with torch.device("meta"):
        model = build_segmentation_model(cfg.model)
    keys = set(model.state_dict())
    assert {"backbone.layer4.2.conv3.weight", "classifier.4.weight", "aux_classifier.4.weight"} <= keys
    assert model.classifier[4].out_channels == 21 and model.backbone.strides["res5"] == 8


def test_demo_config_loads_and_mistakes_name_the_key():
    demo = os.path.join(REPO, "configs", "demo", "shapes_semantic.yaml")
    cfg = load_config(SegConfig, demo)
    assert cfg.model.head == "semantic_fpn" and cfg.data.train[0].coco.categories == "all"
    with pytest.raises(ConfigError, match="data.train"):
        load_config(SegConfig, demo, ["data.train=[{coco: {json: a.json}}]"])
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(SegConfig, demo, ["data.val=[{}]"])
    with pytest.raises(ConfigError, match="ignore_index"):
        load_config(SegConfig, demo, ["model.ignore_index=3"])
