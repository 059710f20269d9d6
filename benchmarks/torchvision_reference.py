"""Reference torchvision detectors for checking conversions (tests) and speed (benchmarks).

torchvision's ``fasterrcnn_resnet50_fpn(weights=None)`` is not the network its COCO weights run in:
without weights it uses trainable BatchNorm2d and trains every stage. ``torchvision_rcnn`` builds the
pretrained layout (FrozenBN, ``trainable_backbone_layers=3``), and ``calibrate`` gives it batch-norm
statistics measured on images, so activations keep a trained network's scale and the comparison is
as well conditioned as with real weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def torchvision_rcnn(mask: bool = False, num_classes: int = 91) -> nn.Module:
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FasterRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    return (MaskRCNN if mask else FasterRCNN)(backbone, num_classes=num_classes)


@torch.no_grad()
def calibrate(model: nn.Module, seed: int = 0, size: int = 160, confident: float = 1.0) -> nn.Module:
    """Measure the frozen batch-norm statistics of ``model``'s ResNet body on random images (one
    stage at a time, as training would have set them), and sharpen the box classifier by
    ``confident`` so that an untrained detector returns many well-separated detections."""
    from torchvision.models import resnet50
    g = torch.Generator().manual_seed(seed)
    body = model.backbone.body
    probe = resnet50(weights=None)
    probe.load_state_dict({k: v for k, v in body.state_dict().items()}, strict=False)
    for m in probe.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the probe batches
            m.reset_running_stats()
    probe.train()
    for _ in range(2):
        probe(torch.randn(4, 3, size, size, generator=g))
    state = {k: v for k, v in probe.state_dict().items() if not k.endswith("num_batches_tracked")}
    body.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    model.roi_heads.box_predictor.cls_score.weight.mul_(confident)
    return model
