"""Config schema of classification pretraining and fine-tuning (``tools/train_cls.py``).

The shared header (docs/ARCHITECTURE.md) is :class:`engine.config.RunConfig` and the backbone's
vocabulary :class:`backbones.config.BackboneConfig`; what is added here is the
classification data (ImageFolder trees or the built-in synthetic shapes), the augmentation recipe
and the test-time options of the paper (10-crop, fully-convolutional multi-scale testing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from backbones.config import BackboneConfig
from engine.config import ConfigError, RunConfig, SolverConfig, TestConfig, Workers, check_workers, choice
from engine.resume import starting_weights_required

__all__ = ["ClsConfig", "ClsModelConfig", "ClsDataConfig", "ClsDatasetConfig", "SyntheticShapesConfig",
           "ClsTestConfig", "RECIPES"]

# paper: the ResNet paper's ImageNet augmentation (§3.4); modern: random-resized crops (+ RandAugment,
# mixup/cutmix); cifar: the paper's CIFAR-10 augmentation (§4.2); shapes: the synthetic demo set.
RECIPES = ("paper", "modern", "cifar", "shapes")


@dataclass
class SyntheticShapesConfig:
    num_images: int = 2000
    image_size: int = 64
    num_classes: int = 0  # 0: every shape kind engine.shapes draws
    seed: int = 0  # the set is a pure function of (seed, index): use different seeds for train and val
    cache: bool = True  # keep drawn images in memory (num_images * image_size^2 * 3 bytes per process)


@dataclass
class ClsDatasetConfig:
    """One dataset: an ImageFolder tree (``root/CLASS/*.JPEG``) or the synthetic shapes."""
    root: str = ""
    synthetic: Optional[SyntheticShapesConfig] = None

    def validate(self, prefix: str = "") -> None:
        if bool(self.root) == (self.synthetic is not None):
            raise ConfigError(f"{prefix.rstrip('.')}: give exactly one of 'root' (an ImageFolder directory) "
                              "or 'synthetic' (the built-in shapes)")


@dataclass
class ClsModelConfig:
    # backbone.weights: ImageNet weights of any format (torchvision, timm, MSRA .pkl, a reskit
    # classification or transferred checkpoint). A head whose shape does not fit num_classes is
    # replaced by a new one, so fine-tuning on a new set of classes is this one key.
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet50"))
    num_classes: int = 1000
    weights: Optional[str] = None  # a whole classifier checkpoint for --eval-only (default: model_final.pth)
    head_lr_mult: float = 1.0  # fc learning rate = base_lr * head_lr_mult (backbone: backbone.lr_mult)
    drop_rate: float = 0.0  # dropout before the fc layer

    def validate(self, prefix: str = "") -> None:
        if self.num_classes < 1:
            raise ConfigError(f"{prefix}num_classes: must be at least 1, got {self.num_classes}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"{prefix}drop_rate: expected a probability in [0, 1), got {self.drop_rate}")
        if self.weights and starting_weights_required() and not os.path.isfile(self.weights):
            raise ConfigError(f"{prefix}weights: file not found: {self.weights}")
        if not self.weights:  # whole-classifier weights replace the backbone's starting weights
            self.backbone.check_weights_file(prefix + "backbone.")


@dataclass
class ClsDataConfig:
    train: List[ClsDatasetConfig] = field(default_factory=list)
    val: List[ClsDatasetConfig] = field(default_factory=list)
    num_workers: Workers = "auto"  # int, or auto: engine.hardware.choose_num_workers
    skip_bad: bool = False  # skip (and count) unreadable images instead of stopping with their name
    recipe: str = "paper"  # paper | modern | cifar | shapes
    crop_size: int = 224  # training crop and evaluation centre crop
    resize_size: int = 256  # evaluation: shorter side resized to this before the centre crop
    scale_range: List[int] = field(default_factory=lambda: [256, 480])  # paper: shorter side random in it
    rrc_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # modern: area fraction of the crop
    pad: int = 4  # cifar / shapes: pixels of zero padding before the random crop
    flip: bool = True  # random horizontal flip
    pca_lighting: float = 0.1  # AlexNet-style lighting noise std (paper recipe); 0 disables
    randaugment: str = ""  # timm string, e.g. "rand-m9-mstd0.5"; "" disables (modern recipe)
    mixup: float = 0.0  # alpha; 0 disables (timm Mixup)
    cutmix: float = 0.0  # alpha; 0 disables
    label_smoothing: float = 0.0

    def validate(self, prefix: str = "") -> None:
        check_workers(prefix + "num_workers", self.num_workers)
        choice(prefix + "recipe", self.recipe, list(RECIPES))
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"{prefix}scale_range: expected [min, max] shorter sides, got {self.scale_range}")
        if len(self.rrc_scale) != 2 or not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ConfigError(f"{prefix}rrc_scale: expected [min, max] area fractions in (0, 1], "
                              f"got {self.rrc_scale}")
        if self.crop_size < 1 or self.resize_size < self.crop_size:
            raise ConfigError(f"{prefix}resize_size: must be at least crop_size ({self.crop_size}), "
                              f"got {self.resize_size}")
        if self.recipe == "paper" and self.scale_range[0] < self.crop_size:
            raise ConfigError(f"{prefix}scale_range: the smallest shorter side ({self.scale_range[0]}) must "
                              f"be at least crop_size ({self.crop_size})")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"{prefix}label_smoothing: expected [0, 1), got {self.label_smoothing}")
        if self.randaugment and not self.randaugment.startswith("rand"):
            raise ConfigError(f"{prefix}randaugment: expected a timm RandAugment string such as "
                              f"'rand-m9-mstd0.5', got '{self.randaugment}'")
        if self.mixup < 0 or self.cutmix < 0 or self.pca_lighting < 0 or self.pad < 0:
            raise ConfigError(f"{prefix}mixup, cutmix, pca_lighting and pad must not be negative")


@dataclass
class ClsTestConfig(TestConfig):
    ten_crop: bool = False  # the paper's 10-crop testing (4 corners + centre, and their flips)
    # Fully-convolutional testing: the fc applied at every position of the full image's feature map,
    # shorter side resized to each size, scores averaged (paper §3.4: [224, 256, 384, 480, 640]).
    multiscale: List[int] = field(default_factory=list)

    def validate(self, prefix: str = "") -> None:
        if self.ten_crop and self.multiscale:
            raise ConfigError(f"{prefix}ten_crop: choose 10-crop or multi-scale testing, not both")
        if any(s < 1 for s in self.multiscale):
            raise ConfigError(f"{prefix}multiscale: sizes must be positive, got {self.multiscale}")


@dataclass
class ClsConfig(RunConfig):
    TASK: ClassVar[str] = "classification"  # engine.config.load_config: "not a classification config" for another task's file
    TOOLS: ClassVar[str] = "classification configs are read by tools/train_cls.py"
    output_dir: str = "runs/classification"
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(
        base_lr=0.1, momentum=0.9, weight_decay=1e-4, ims_per_batch=256, max_iter=600000,
        lr_schedule="plateau", checkpoint_period=5000))
    test: ClsTestConfig = field(default_factory=lambda: ClsTestConfig(ims_per_batch=256))
    model: ClsModelConfig = field(default_factory=ClsModelConfig)
    data: ClsDataConfig = field(default_factory=ClsDataConfig)

    def validate(self, prefix: str = "") -> None:
        if not self.data.train and not self.data.val:
            raise ConfigError("data.train: no datasets; give data.train (and data.val) as lists of "
                              "{root: DIR} or {synthetic: {...}}")
