"""Config schema of the detection tools (train_det, eval_coco, predict): Faster / Mask R-CNN, C4 or FPN."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

from backbones.config import BackboneConfig
from engine.config import ConfigError, RunConfig, SolverConfig, TestConfig, Workers, check_workers, choice


@dataclass
class RPNConfig:
    anchor_sizes: List[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    aspect_ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    pre_nms_topk_train: int = 2000  # per level (FPN) or per image (C4), as torchvision
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 2000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5


@dataclass
class RoIHeadsConfig:
    pooler: str = "align"  # align (RoIAlign) | pool (RoIPool, as in the paper)
    pooler_resolution: int = 7  # FPN 7; C4 14 (res5 then halves it to 7)
    sampling_ratio: int = 2
    mask_pooler_resolution: int = 14
    mask_head_convs: int = 4  # FPN mask head: 3x3 convolutions before the deconvolution
    mask_head_dim: int = 256  # their channels
    fc_dim: int = 1024  # FPN two-fc head
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    bbox_reg_weights: List[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


@dataclass
class DetModelConfig:
    arch: str = "FPN"  # FPN | C4
    mask: bool = False  # Mask R-CNN: adds the mask head
    # Foreground classes (background not counted). auto: the categories that training annotations use
    # (detection.task); a number must equal that count, and evaluation and prediction take the
    # checkpoint's own label space.
    num_classes: Union[int, str] = "auto"
    weights: Optional[str] = None  # a whole-detector checkpoint to start from (fine-tuning)
    # Names (module prefixes, "*" for any) that may be missing from, left over in or of another shape
    # in model.weights; anything else that does not fit stops the run (detection.weights).
    weights_partial: List[str] = field(default_factory=list)
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(norm="FrozenBN", freeze_at=2))
    fpn_channels: int = 256
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "arch", self.arch, ["FPN", "C4"])
        choice(prefix + "roi_heads.pooler", self.roi_heads.pooler, ["align", "pool"])
        if isinstance(self.num_classes, str):
            if self.num_classes != "auto":
                raise ConfigError(f"{prefix}num_classes: '{self.num_classes}' is not a valid value (an integer "
                                  ">= 1 or auto)")
        elif self.num_classes < 1:
            raise ConfigError(f"{prefix}num_classes: must be at least 1, got {self.num_classes}")
        if self.roi_heads.mask_head_convs < 1 or self.roi_heads.mask_head_dim < 1:
            raise ConfigError(f"{prefix}roi_heads.mask_head_convs / mask_head_dim: must be at least 1")


@dataclass
class InputConfig:
    min_size_train: List[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    flip_prob: float = 0.5
    photometric: bool = False  # brightness / contrast / saturation jitter


@dataclass
class CocoDatasetConfig:
    json: str = ""
    images: str = ""


@dataclass
class DetDataConfig:
    train: List[CocoDatasetConfig] = field(default_factory=list)
    val: List[CocoDatasetConfig] = field(default_factory=list)
    num_workers: Workers = "auto"  # int, or auto: engine.hardware.choose_num_workers
    keep_empty: bool = False  # keep training images without annotations
    skip_bad: bool = False  # skip (and count) unreadable images instead of stopping
    # Share of a training or validation json's annotations that may be unusable (null or empty boxes,
    # duplicates, ...: detection.annotations drops and counts them) before the run stops.
    max_dropped_fraction: float = 0.25
    # Categories that no training annotation uses (an annotation tool's placeholder supercategory) are
    # left out of the label space; true keeps every category of the json as a class.
    keep_unused_categories: bool = False
    # Validation categories match training's by id; a category id whose name differs between the two
    # jsons stops the run (two exports of one project that renamed a class), unless this is true: the
    # ids rule and the names may differ (the per-class AP table shows the validation json's names).
    categories_by_id: bool = False

    def validate(self, prefix: str = "") -> None:
        check_workers(prefix + "num_workers", self.num_workers)
        if not 0.0 <= self.max_dropped_fraction <= 1.0:
            raise ConfigError(f"{prefix}max_dropped_fraction: must be between 0 and 1, got {self.max_dropped_fraction}")
        for split in ("train", "val"):
            for i, ds in enumerate(getattr(self, split)):
                if not ds.json or not ds.images:
                    raise ConfigError(f"{prefix}{split}[{i}]: needs both 'json' and 'images'")


@dataclass
class DetTestConfig(TestConfig):
    backend: str = "faster_coco_eval"  # faster_coco_eval | pycocotools

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "backend", self.backend, ["faster_coco_eval", "pycocotools"])


@dataclass
class DetConfig(RunConfig):
    output_dir: str = "runs/detection"
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(
        base_lr=0.02, weight_decay=1e-4, ims_per_batch=16, reference_batch=16, max_iter=90000,
        steps=[60000, 80000], warmup_iters=1000, checkpoint_period=5000))
    test: DetTestConfig = field(default_factory=DetTestConfig)
    model: DetModelConfig = field(default_factory=DetModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
