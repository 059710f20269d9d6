"""Build Faster / Mask R-CNN (C4 or FPN) from a :class:`~detection.config.DetModelConfig`.

FPN (Lin et al.): P2-P6 from the FPN neck, an RPN on every level (one anchor size per level, three
ratios), multi-scale RoIAlign 7x7 and the two-fc head of 1024 - torchvision's
``fasterrcnn_resnet50_fpn`` exactly, so its weights convert 1:1.

C4 (the ResNet paper's Appendix A, detectron2's "C4"): stem to res4 shared, the RPN on res4 (stride 16,
anchors 32-512 x ratios 0.5/1/2), RoIAlign (or the paper's RoIPool) 14x14 on res4, then res5 run per
region as the head, average pooling, and sibling classifier / box regressor.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Tuple

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from backbones import FPNOptions, build_backbone, build_resnet_stage, load_pretrained, timm_model_name
from backbones.weights import check_backbone_fit
from backbones.norm import TORCHVISION_INPUT_NORM

from .config import DetModelConfig, InputConfig
from .heads import Res5BoxHead, Res5MaskHead, SingleLevelRoIPooler
from .poolers import MultiScaleRoIAlign
from .rcnn import RCNN, RCNNTransform

logger = logging.getLogger(__name__)

def _log_report(report, cfg: DetModelConfig) -> None:
    if report is not None:
        logger.info("backbone weights from %s:\n%s", cfg.backbone.weights, report)


def _rpn(cfg: DetModelConfig, anchor_gen: AnchorGenerator, in_channels: int) -> RegionProposalNetwork:
    r = cfg.rpn
    head = RPNHead(in_channels, anchor_gen.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchor_gen, head, r.fg_iou_thresh, r.bg_iou_thresh, r.batch_size_per_image,
        r.positive_fraction,
        pre_nms_top_n=dict(training=r.pre_nms_topk_train, testing=r.pre_nms_topk_test),
        post_nms_top_n=dict(training=r.post_nms_topk_train, testing=r.post_nms_topk_test),
        nms_thresh=r.nms_thresh)


def _roi_heads(cfg: DetModelConfig, box_pool, box_head, box_predictor, mask_parts=(None, None, None)):
    h = cfg.roi_heads
    mask_pool, mask_head, mask_predictor = mask_parts
    return RoIHeads(box_pool, box_head, box_predictor, h.fg_iou_thresh, h.bg_iou_thresh,
                    h.batch_size_per_image, h.positive_fraction, tuple(h.bbox_reg_weights),
                    h.score_thresh, h.nms_thresh, h.detections_per_img,
                    mask_roi_pool=mask_pool, mask_head=mask_head, mask_predictor=mask_predictor)


def _build_fpn(cfg: DetModelConfig) -> Tuple[nn.Module, nn.Module, nn.Module]:
    in_features = [f for f in cfg.backbone.out_features if f in ("res2", "res3", "res4", "res5")]
    if in_features != ["res2", "res3", "res4", "res5"]:
        raise ValueError("model.backbone.out_features: FPN detectors take [res2, res3, res4, res5], "
                         f"got {cfg.backbone.out_features}")
    backbone = build_backbone(cfg.backbone, fpn=FPNOptions(in_features, cfg.fpn_channels, top_block="maxpool"))
    _log_report(backbone.load_report, cfg)
    levels = list(backbone.out_features)
    if len(cfg.rpn.anchor_sizes) != len(levels):
        raise ValueError(f"model.rpn.anchor_sizes: FPN has {len(levels)} levels {levels}, "
                         f"give one anchor size per level, got {cfg.rpn.anchor_sizes}")
    anchors = AnchorGenerator(tuple((s,) for s in cfg.rpn.anchor_sizes),
                              (tuple(cfg.rpn.aspect_ratios),) * len(levels))
    rpn = _rpn(cfg, anchors, cfg.fpn_channels)

    h = cfg.roi_heads
    if h.pooler != "align":
        raise ValueError("model.roi_heads.pooler: FPN pools with multi-scale RoIAlign; RoIPool is a C4 option")
    pooled = [lv for lv in levels if lv != "p6"]  # P6 only feeds the RPN, as in the FPN paper
    box_pool = MultiScaleRoIAlign(pooled, h.pooler_resolution, h.sampling_ratio)
    box_head = TwoMLPHead(cfg.fpn_channels * h.pooler_resolution ** 2, h.fc_dim)
    box_predictor = FastRCNNPredictor(h.fc_dim, cfg.num_classes + 1)
    mask_parts = (None, None, None)
    if cfg.mask:
        mask_parts = (MultiScaleRoIAlign(pooled, h.mask_pooler_resolution, h.sampling_ratio),
                      MaskRCNNHeads(cfg.fpn_channels, [h.mask_head_dim] * h.mask_head_convs, 1),
                      MaskRCNNPredictor(h.mask_head_dim, h.mask_head_dim, cfg.num_classes + 1))
    return backbone, rpn, _roi_heads(cfg, box_pool, box_head, box_predictor, mask_parts)


def _build_c4(cfg: DetModelConfig) -> Tuple[nn.Module, nn.Module, nn.Module]:
    name = cfg.backbone.name
    if timm_model_name(name) is not None or name.startswith("cifar"):
        raise ValueError(f"model.arch C4 runs res5 of a ResNet per region; '{name}' has none "
                         "(use arch: FPN for timm backbones)")
    # The shared trunk stops at res4; res5 is built alone for the head. The weights file is read
    # once, into the trunk lent res5 under its torchvision name (layer4), so every key matches.
    unloaded = dataclasses.replace(cfg.backbone, weights=None)
    backbone = build_backbone(unloaded, out_features=["res4"])
    res5 = build_resnet_stage(unloaded, "res5")
    backbone.load_report = None
    if cfg.backbone.weights:
        backbone.layer4 = res5
        try:
            backbone.load_report = load_pretrained(backbone, cfg.backbone.weights, format=cfg.backbone.weights_format)
        finally:
            del backbone.layer4
        check_backbone_fit(backbone.load_report)
        _log_report(backbone.load_report, cfg)
    stride, channels = backbone.strides["res4"], res5.out_channels

    anchors = AnchorGenerator((tuple(cfg.rpn.anchor_sizes),), (tuple(cfg.rpn.aspect_ratios),))
    rpn = _rpn(cfg, anchors, backbone.out_channels["res4"])
    h = cfg.roi_heads
    box_pool = SingleLevelRoIPooler("res4", h.pooler_resolution, stride, h.sampling_ratio, h.pooler)
    box_head = Res5BoxHead(res5, channels)
    box_predictor = FastRCNNPredictor(channels, cfg.num_classes + 1)
    mask_parts = (None, None, None)
    if cfg.mask:
        mask_parts = (SingleLevelRoIPooler("res4", h.mask_pooler_resolution, stride, h.sampling_ratio,
                                           h.pooler),
                      Res5MaskHead(box_head),
                      MaskRCNNPredictor(channels, 256, cfg.num_classes + 1))
    return backbone, rpn, _roi_heads(cfg, box_pool, box_head, box_predictor, mask_parts)


def build_detector(cfg: DetModelConfig, input_cfg: Optional[InputConfig] = None) -> RCNN:
    """The detector of ``cfg``, backbone weights loaded from ``cfg.backbone.weights`` when set.

    Whole-detector weights (``cfg.weights``, a checkpoint) are loaded by the caller through
    :func:`detection.weights.load_detector_weights`, after any layout changes.
    """
    input_cfg = input_cfg or InputConfig()
    if not isinstance(cfg.num_classes, int):  # "auto" is resolved from the data by DetectionTask
        raise ValueError(f"model.num_classes is {cfg.num_classes!r}: give the number of classes to build a "
                         "detector outside a DetectionTask (which counts them in the training data)")
    backbone, rpn, roi_heads = (_build_fpn if cfg.arch == "FPN" else _build_c4)(cfg)
    input_norm = getattr(backbone, "input_norm", TORCHVISION_INPUT_NORM)
    transform = RCNNTransform(input_cfg.min_size_test, input_cfg.max_size_test, input_norm)
    return RCNN(backbone, rpn, roi_heads, transform, arch=cfg.arch)
