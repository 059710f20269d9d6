"""Config schema of tools/train_seg.py: semantic segmentation heads (FCN, DeepLabV3, semantic FPN).

The defaults are torchvision's reference recipe (references/segmentation): a ResNet-50 dilated to
output stride 8, 21 classes (the 20 PASCAL VOC categories of COCO plus background), random scale
0.5-2.0 of a 520-pixel short side, 480-pixel crops, SGD 0.02 at a global batch of 32 with a poly
schedule for 30 epochs. A dataset is either ``{coco: {json, images, categories}}`` or
``{folder: {images, labels}}``::

    data:
      train:
        - coco: {json: annotations/instances_train2017.json, images: train2017, categories: voc}
        - folder: {images: extra/images, labels: extra/labels}   # PNG label maps, same file stem
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from backbones.config import BackboneConfig, replaces_backbone
from engine.config import ConfigError, RunConfig, SolverConfig, TestConfig, Workers, check_workers, choice

HEADS = ("fcn", "deeplabv3", "semantic_fpn")
HEAD_NORMS = ("BN", "SyncBN", "GN")


@dataclass
class SegModelConfig:
    head: str = "deeplabv3"  # fcn | deeplabv3 | semantic_fpn
    # Dilation [1, 2]: output stride 16; [2, 4]: 8 (torchvision's replace_stride_with_dilation
    # [False, True, True]). semantic_fpn takes the undilated res2..res5.
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet50", dilation=[2, 4]))
    num_classes: int = 21  # including background
    aux_loss: bool = False  # auxiliary FCN head on res4, as torchvision's aux_classifier
    aux_weight: float = 0.5  # loss = CE(out) + aux_weight * CE(aux), torchvision's reference
    aux_lr_mult: float = 1.0  # torchvision's reference trains the aux head at 10x the LR
    head_norm: str = "BN"  # norm layers of the heads; torchvision's heads use BN, Panoptic FPN GN
    head_channels: int = 128  # semantic FPN: channels of the per-level branches (detectron2's conv_dims)
    fpn_channels: int = 256  # semantic FPN: channels of the pyramid
    atrous_rates: List[int] = field(default_factory=lambda: [12, 24, 36])  # DeepLabV3's ASPP
    weights: Optional[str] = None  # a whole segmentation checkpoint to start from (or to evaluate)
    # Names (module prefixes, "*" for any) that may be missing from, left over in or of another shape
    # in model.weights, e.g. [classifier, rpn, roi_heads] to start from a detector (segmentation.weights).
    weights_partial: List[str] = field(default_factory=list)
    ignore_index: int = 255  # label of pixels that count neither in the loss nor in the metrics
    # Fraction of the (not ignored) pixels, hardest first, the cross-entropy averages over: hard pixel
    # mining, detectron2 Panoptic-DeepLab's LOSS_TOP_K (0.2 there). 1.0: every pixel (torchvision).
    loss_top_k: float = 1.0
    # Weight of a Lovasz-softmax term added to the cross-entropy (a surrogate of 1 - IoU per class,
    # Berman et al. 2018; segmentation.task.lovasz_softmax_loss); 0: none. lovasz_subsample k: the term
    # over every k-th pixel, as its sort over all the batch's pixels is most of its cost.
    loss_lovasz: float = 0.0
    lovasz_subsample: int = 1

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "head", self.head, list(HEADS))
        if not replaces_backbone(self.weights, self.weights_partial):
            self.backbone.check_weights_file(prefix + "backbone.")
        choice(prefix + "head_norm", self.head_norm, list(HEAD_NORMS))
        if self.num_classes < 2:
            raise ConfigError(f"{prefix}num_classes: counts the background too, so at least 2; got {self.num_classes}")
        if 0 <= self.ignore_index < self.num_classes:
            raise ConfigError(f"{prefix}ignore_index {self.ignore_index} is a class label (num_classes "
                              f"{self.num_classes}); use 255 or -1")
        if self.head == "semantic_fpn" and list(self.backbone.dilation) != [1, 1]:
            raise ConfigError(f"{prefix}backbone.dilation: semantic_fpn builds a pyramid on res2..res5 "
                              f"and needs them undilated ([1, 1]); got {self.backbone.dilation}")
        if self.aux_weight < 0:
            raise ConfigError(f"{prefix}aux_weight: must be >= 0, got {self.aux_weight}")
        if not 0.0 < self.loss_top_k <= 1.0:
            raise ConfigError(f"{prefix}loss_top_k: the fraction of pixels the loss averages over, in (0, 1]; "
                              f"got {self.loss_top_k}")
        if self.loss_lovasz < 0:
            raise ConfigError(f"{prefix}loss_lovasz: the weight of the Lovasz-softmax term, >= 0 (0: none); "
                              f"got {self.loss_lovasz}")
        if self.lovasz_subsample < 1:
            raise ConfigError(f"{prefix}lovasz_subsample: every k-th pixel for the Lovasz term, k >= 1; "
                              f"got {self.lovasz_subsample}")


@dataclass
class CocoSemanticConfig:
    json: str = ""
    images: str = ""
    # voc: the 20 PASCAL VOC categories of COCO + background (torchvision's reference, 21 classes);
    # all: every category of the json, contiguous 1..K by id + background 0.
    categories: str = "voc"

    def validate(self, prefix: str = "") -> None:
        choice(prefix + "categories", self.categories, ["voc", "all"])
        if not self.json or not self.images:
            raise ConfigError(f"{prefix.rstrip('.')}: needs both 'json' and 'images'")


@dataclass
class FolderConfig:
    images: str = ""  # image files (jpg, png, ...)
    labels: str = ""  # one PNG label map per image, same file stem; values are class indices

    def validate(self, prefix: str = "") -> None:
        if not self.images or not self.labels:
            raise ConfigError(f"{prefix.rstrip('.')}: needs both 'images' and 'labels'")


@dataclass
class SegDatasetConfig:
    coco: Optional[CocoSemanticConfig] = None
    folder: Optional[FolderConfig] = None

    def validate(self, prefix: str = "") -> None:
        if (self.coco is None) == (self.folder is None):
            raise ConfigError(f"{prefix.rstrip('.')}: give exactly one of 'coco: {{json, images, categories}}' "
                              "or 'folder: {images, labels}'")


@dataclass
class SegDataConfig:
    train: List[SegDatasetConfig] = field(default_factory=list)
    val: List[SegDatasetConfig] = field(default_factory=list)
    class_names: List[str] = field(default_factory=list)  # folder datasets: names of labels 0..K-1
    num_workers: Workers = "auto"  # int, or auto: engine.hardware.choose_num_workers
    skip_bad: bool = False  # skip (and count) unreadable training files instead of stopping
    # torchvision drops COCO training images whose kept annotations cover at most 1000 pixels (the
    # json's areas summed); -1 keeps every image.
    min_train_area: float = 1000.0
    base_size: int = 520  # short side around which training scales, and the evaluation short side
    crop_size: int = 480  # training crops; smaller images are padded (image 0, label ignore_index)
    scale_range: List[float] = field(default_factory=lambda: [0.5, 2.0])  # of base_size
    flip_prob: float = 0.5
    eval_resize: bool = True  # evaluate at short side base_size (torchvision); False: original size

    def validate(self, prefix: str = "") -> None:
        check_workers(prefix + "num_workers", self.num_workers)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"{prefix}scale_range: expected [low, high] with 0 < low <= high, got {self.scale_range}")
        if self.base_size < 1 or self.crop_size < 1:
            raise ConfigError(f"{prefix}base_size and crop_size must be positive, got {self.base_size}, "
                              f"{self.crop_size}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"{prefix}flip_prob: expected 0..1, got {self.flip_prob}")


@dataclass
class SegConfig(RunConfig):
    TASK: ClassVar[str] = "semantic segmentation"  # engine.config.load_config: "not a semantic segmentation config" for another task's file
    TOOLS: ClassVar[str] = "semantic segmentation configs are read by tools/train_seg.py, export.py and predict.py with a semantic checkpoint"
    output_dir: str = "runs/segmentation"
    # torchvision's optimiser and schedule shape; its length (30 epochs, written for a batch of 32)
    # lives in configs/segmentation/_base_/schedule_30e.yaml, since max_epochs here would silently
    # override every max_iter a config sets.
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(
        base_lr=0.02, momentum=0.9, weight_decay=1e-4, ims_per_batch=32, lr_schedule="poly", poly_power=0.9,
        checkpoint_period=5000))
    test: TestConfig = field(default_factory=lambda: TestConfig(ims_per_batch=8))
    model: SegModelConfig = field(default_factory=SegModelConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
