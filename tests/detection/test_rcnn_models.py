"""Faster / Mask R-CNN models: torchvision conversions reproduce torchvision, C4 and FPN train."""
import math

import numpy as np
import pytest
import torch
import torchvision

from detection.build import build_detector
from detection.config import DetModelConfig, InputConfig
from detection.weights import convert_torchvision_detection, match_detections
from detection.predictor import Predictor
from torchvision_reference import calibrate, torchvision_rcnn

FPN_CONFIG = "configs/detection/faster_rcnn_R50_FPN_1x.yaml"
MASK_CONFIG = "configs/detection/mask_rcnn_R50_FPN_1x.yaml"
SMALL = ["model.backbone.weights=null", "input.min_size_test=256", "input.max_size_test=320"]


def _image(seed: int = 0, h: int = 200, w: int = 260) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 20, w // 20, 3)).astype(np.uint8)
    import cv2
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img.astype(np.int32) + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)


def _torchvision_outputs(tv, image: np.ndarray):
    tv.transform.min_size, tv.transform.max_size = (256,), 320
    with torch.no_grad():
        return tv([torch.from_numpy(image).permute(2, 0, 1).float().div(255)])[0]


def _save_converted(tv, path) -> None:
    state, meta = convert_torchvision_detection(tv.state_dict())
    torch.save({"model": state, "meta": meta}, path)


def test_torchvision_fasterrcnn_conversion_reproduces_detections(tmp_path):
    torch.manual_seed(0)
    tv = calibrate(torchvision_rcnn()).eval()
    _save_converted(tv, tmp_path / "frcnn.pth")
    image = _image()
    expected = _torchvision_outputs(tv, image)
    assert len(expected["boxes"]) >= 10

    plain = Predictor(FPN_CONFIG, str(tmp_path / "frcnn.pth"), device="cpu", fast=False, overrides=SMALL,
                      precision="off")(image)  # fp32, as the reference
    # The plain path is torchvision's arithmetic: the same detections in the same order.
    # Label i of torchvision's COCO weights is category id i.
    np.testing.assert_allclose(plain["boxes"], expected["boxes"].numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(plain["scores"], expected["scores"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(plain["category_ids"], expected["labels"].numpy())

    # The fast path (folded norms, channels-last) reorders float32 sums: with untrained heads, many
    # proposals tie and a rounding difference can flip an NMS choice, so most, not all, detections
    # are the same; its features equal torchvision's within 1e-4 relative.
    predictor = Predictor(FPN_CONFIG, str(tmp_path / "frcnn.pth"), device="cpu", fast=True, overrides=SMALL,
                          precision="off")
    fast = predictor(image)
    reference = {k: v.numpy() for k, v in expected.items()}
    assert match_detections(reference, fast) >= 0.9 * len(expected["boxes"])
    moved = dict(fast, boxes=fast["boxes"] + np.array([0, 0, 0.05, 0], dtype=np.float32))
    assert match_detections(reference, moved) == 0
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        want = tv.backbone(x)
        got = predictor.model.backbone(x)
    for (_, a), (_, b) in zip(want.items(), got.items()):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_torchvision_maskrcnn_conversion_reproduces_masks(tmp_path):
    torch.manual_seed(1)
    tv = calibrate(torchvision_rcnn(mask=True), seed=1).eval()
    _save_converted(tv, tmp_path / "mrcnn.pth")
    image = _image(seed=1)
    expected = _torchvision_outputs(tv, image)
    assert len(expected["boxes"]) >= 10
    ours = Predictor(MASK_CONFIG, str(tmp_path / "mrcnn.pth"), device="cpu", fast=False, overrides=SMALL,
                      precision="off")(image)  # fp32, as the reference
    assert len(ours["boxes"]) == len(expected["boxes"])
    np.testing.assert_allclose(ours["boxes"], expected["boxes"].numpy(), atol=1e-2, rtol=0)
    np.testing.assert_array_equal(ours["category_ids"], expected["labels"].numpy())
    assert ours["masks"].shape == (len(ours["boxes"]),) + image.shape[:2]
    expected_masks = expected["masks"][:, 0].numpy() >= 0.5
    ious = [_mask_iou(a, b) for a, b in zip(ours["masks"], expected_masks)]
    assert min(ious) >= 0.99, ious


def _targets(n_images: int, size: int, num_classes: int, with_masks: bool):
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(n_images):
        images.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        xy = torch.randint(0, size // 2, (2, 2), generator=g).float()
        wh = torch.randint(size // 8, size // 2, (2, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        t = {"boxes": boxes, "labels": torch.tensor([1, num_classes])}
        if with_masks:
            masks = torch.zeros(2, size, size, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            t["masks"] = masks
        targets.append(t)
    return images, targets


@pytest.mark.parametrize("arch,pooler,mask", [("C4", "align", True), ("C4", "pool", False),
                                              ("FPN", "align", True)])
def test_detector_trains_and_predicts(arch, pooler, mask):
    cfg = DetModelConfig(arch=arch, mask=mask, num_classes=3)
    cfg.backbone.name, cfg.backbone.weights = "resnet18", None
    cfg.roi_heads.pooler = pooler
    if arch == "C4":
        cfg.roi_heads.pooler_resolution, cfg.roi_heads.sampling_ratio = 14, 0
        cfg.backbone.out_features = ["res4"]
    else:
        cfg.fpn_channels = 64
    torch.manual_seed(0)
    model = build_detector(cfg, InputConfig(min_size_test=96, max_size_test=128)).train()
    images, targets = _targets(2, 96, 3, mask)
    losses = model(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if mask else set())
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    # frozen stem (freeze_at=2 default): no gradient; the head trains
    assert model.backbone.conv1.weight.grad is None if arch == "C4" else \
        model.backbone.bottom_up.conv1.weight.grad is None
    head = model.roi_heads.box_predictor.cls_score.weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    if arch == "C4":
        # res5 runs per region inside the box head, once in the state dict
        keys = model.state_dict().keys()
        assert any(k.startswith("roi_heads.box_head.res5.") for k in keys)
        assert not any(k.startswith("backbone.layer4.") or k.startswith("roi_heads.mask_head.") for k in keys)
    model.eval()
    with torch.no_grad():
        out = model([images[0][:, :80, :90]])[0]
    assert set(out) >= {"boxes", "scores", "labels"}
    if len(out["boxes"]):
        assert out["boxes"][:, 2].max() <= 90 + 1e-3 and out["boxes"][:, 3].max() <= 80 + 1e-3
    if mask:
        assert out["masks"].shape[-2:] == (80, 90)


def test_a_faster_rcnn_checkpoint_starts_a_mask_rcnn(tmp_path):
    """model.weights = a Faster R-CNN checkpoint for a Mask R-CNN config (docs/tools.md): everything
    but the mask head loads, the report lists the mask head as missing; evaluation still needs all."""
    from detection.weights import load_detector_weights
    from engine.checkpoint import save_checkpoint
    from engine.data import DataError

    def detector(mask):
        cfg = DetModelConfig(mask=mask, num_classes=3, fpn_channels=32)
        cfg.backbone.name, cfg.backbone.weights = "resnet18", None
        torch.manual_seed(0)
        return build_detector(cfg, InputConfig(min_size_test=64, max_size_test=96))

    faster = detector(False)
    save_checkpoint(str(tmp_path / "faster.pth"), {"model": faster.state_dict(),
                                                   "meta": {"task": "detection", "mask": False}})
    mask_rcnn = detector(True)
    report = load_detector_weights(mask_rcnn, str(tmp_path / "faster.pth"))
    assert report.missing and all(k.startswith(("roi_heads.mask_head.", "roi_heads.mask_predictor."))
                                  for k in report.missing)
    assert not report.unexpected and not report.mismatched
    own = mask_rcnn.state_dict()
    assert all(torch.equal(own[k], v) for k, v in faster.state_dict().items())
    with pytest.raises(DataError, match="roi_heads.mask_head"):  # evaluation: every tensor must fit
        load_detector_weights(detector(True), str(tmp_path / "faster.pth"), allow_mismatch=False)
