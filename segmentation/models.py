"""Semantic segmentation models: a backbone of ours, a head, an optional auxiliary head on res4.

``SemanticSegmentor(images)`` takes RGB images as a uint8 or float batch in 0-255 [N, 3, H, W] and
returns ``{"out": logits [N, C, H, W]}`` (plus ``"aux"`` when it has an auxiliary head), the logits
upsampled bilinearly to the input size as torchvision's ``_SimpleSegmentationModel`` does. The
normalisation that the backbone weights expect (``backbone.input_norm``, set when weights are loaded)
is applied inside the model, in one place, so data pipelines never normalise.

Parameter names are torchvision's for FCN and DeepLabV3 (``backbone.layer4.0.conv2.weight``,
``classifier.4.weight``, ``aux_classifier.0.weight``): its ``fcn_resnet50`` / ``deeplabv3_resnet50``
state dicts load as they are (``segmentation.weights``). The semantic FPN model holds an FPN backbone
(``backbone.bottom_up.*``, ``backbone.fpn.*``) and ``classifier`` is its :class:`SemanticFPNHead`.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from backbones import FPN, FPNOptions, build_backbone, normalize_image

from .config import SegModelConfig
from .heads import DeepLabHead, FCNHead, SemanticFPNHead, replace_batch_norm

logger = logging.getLogger(__name__)

__all__ = ["SemanticSegmentor", "build_segmentation_model"]


class SemanticSegmentor(nn.Module):
    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: Optional[nn.Module] = None,
                 out_feature: Optional[str] = "res5", aux_feature: str = "res4") -> None:
        """``out_feature``: the backbone output the classifier reads; None: it reads all of them (FPN)."""
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.out_feature = out_feature
        self.aux_feature = aux_feature

    @property
    def input_norm(self) -> dict:
        return self.backbone.input_norm

    @input_norm.setter
    def input_norm(self, value: dict) -> None:
        self.backbone.input_norm = dict(value)

    def _features(self, x: Tensor) -> Dict[str, Tensor]:
        if not isinstance(self.backbone, FPN):
            return self.backbone(x)
        # FPN.forward returns the pyramid only; the auxiliary head also needs res4 of the bottom-up
        # network, so run the two halves here (what FPN.forward does, keeping the bottom-up maps).
        bottom = self.backbone.bottom_up(x)
        pyramid = self.backbone.fpn(OrderedDict((f, bottom[f]) for f in self.backbone.in_features))
        return {**bottom, **dict(zip(self.backbone.out_features, pyramid.values()))}

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        size = images.shape[-2:]
        x = images.float() if not images.is_floating_point() else images
        x = normalize_image(x / 255.0, self.input_norm)
        features = self._features(x)
        head_input = features if self.out_feature is None else features[self.out_feature]
        result = OrderedDict()
        # logits upsampled in fp32 under autocast (heads.SemanticFPNHead says why)
        result["out"] = F.interpolate(self.classifier(head_input).float(), size=size, mode="bilinear",
                                      align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features[self.aux_feature])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def build_segmentation_model(cfg: SegModelConfig) -> SemanticSegmentor:
    """The model ``cfg`` describes, with ``cfg.backbone.weights`` loaded into the backbone if set
    (the report is logged and kept as ``model.backbone_load_report``). ``cfg.weights`` (a whole
    checkpoint) is loaded by the caller: see :func:`segmentation.weights.load_segmentation_weights`."""
    bb = cfg.backbone
    if cfg.head == "semantic_fpn":
        backbone = build_backbone(bb, fpn=FPNOptions(out_channels=cfg.fpn_channels, top_block=None))
        levels = {f: backbone.out_channels[f] for f in backbone.out_features}
        classifier = SemanticFPNHead(levels, backbone.strides, cfg.num_classes, channels=cfg.head_channels,
                                     norm=cfg.head_norm)
        out_feature, aux_source = None, backbone.bottom_up
    else:
        # the stages up to res5 are built either way: the state dict does not depend on aux_loss
        backbone = build_backbone(bb, out_features=["res4", "res5"] if cfg.aux_loss else ["res5"])
        channels = backbone.out_channels["res5"]
        if cfg.head == "fcn":
            classifier = FCNHead(channels, cfg.num_classes)
        else:
            classifier = DeepLabHead(channels, cfg.num_classes, tuple(cfg.atrous_rates))
        replace_batch_norm(classifier, cfg.head_norm)
        out_feature, aux_source = "res5", backbone
    aux_classifier = None
    if cfg.aux_loss:
        if "res4" not in aux_source.out_channels:
            raise ValueError(f"model.aux_loss: the backbone {bb.name} has no res4 output for the auxiliary head")
        aux_classifier = replace_batch_norm(FCNHead(aux_source.out_channels["res4"], cfg.num_classes), cfg.head_norm)
    model = SemanticSegmentor(backbone, classifier, aux_classifier, out_feature=out_feature)
    report = backbone.load_report
    if report is not None:
        logger.info("backbone weights:\n%s", report)
    model.backbone_load_report = report
    return model

