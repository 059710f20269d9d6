"""Our own layouts through tools/export.py: Mask R-CNN C4 (res5 per region, masks) and a semantic FPN,
both on ResNet-18, small settings; ONNX Runtime reproduces the eager model on an image size the
export never saw."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from detection.build import build_detector
from detection.config import DetConfig
from detection.export import OnnxPredictor, _sample_images, export_reference, match_fraction
from detection.predictor import Predictor
from engine.checkpoint import KIND_DETECTION, KIND_SEMANTIC_SEGMENTATION, save_checkpoint
from engine.config import load_config

pytest.importorskip("onnxruntime")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C4_CONFIG = "configs/detection/faster_rcnn_R50_C4_1x.yaml"
C4_SMALL = ["model.num_classes=3", "model.mask=true", "model.backbone.name=resnet18", "model.backbone.weights=null",
            "input.min_size_test=192", "input.max_size_test=256", "model.rpn.post_nms_topk_test=150",
            "model.roi_heads.detections_per_img=25"]


def _export_tool():
    spec = importlib.util.spec_from_file_location("export_tool", os.path.join(ROOT, "tools", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def calibrate_frozen_bn(model: torch.nn.Module, image: np.ndarray) -> None:
    """Each frozen batch norm takes the mean and variance of what reaches it on ``image``, in one pass
    (a pre-hook sets them before the layer runs), so an untrained network keeps a trained one's scale
    and float rounding is not amplified layer after layer."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    def measure(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    model([torch.from_numpy(image).permute(2, 0, 1).float()])
    for h in hooks:
        h.remove()


def test_mask_rcnn_c4_onnx_matches_eager_with_masks(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = load_config(DetConfig, C4_CONFIG, C4_SMALL)
    model = build_detector(cfg.model, cfg.input).eval()
    calibrate_frozen_bn(model, _sample_images([(200, 200)], seed=2)[0])
    with torch.no_grad():  # boxes near their anchors and confident classes, as a trained detector's
        model.rpn.head.bbox_pred.weight.mul_(0.1)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
        model.roi_heads.box_predictor.cls_score.weight.mul_(5)
    weights = str(tmp_path / "c4.pth")
    save_checkpoint(weights, {"model": model.state_dict(), "meta": {
        "task": KIND_DETECTION, "category_ids": [3, 7, 9], "class_names": ["a", "b", "c"]}})
    out = str(tmp_path / "c4.onnx")
    _export_tool().cli(["--config", C4_CONFIG, "--weights", weights, "--format", "onnx", "--out", out, *C4_SMALL])
    assert "masks_compared" in capsys.readouterr().out
    eager = export_reference(Predictor(C4_CONFIG, weights, device="cpu", fast=False, precision="off",
                                       overrides=C4_SMALL))
    image = _sample_images([(230, 170)], seed=9)[0]
    expected, got = eager(image), OnnxPredictor(out)(image)
    assert len(expected["scores"]) >= 10 and set(np.unique(got["category_ids"])) <= {3, 7, 9}
    assert got["masks"].shape == (len(got["scores"]), 230, 170)
    stats: dict = {}
    assert match_fraction(expected, got, stats=stats) >= 0.99
    assert stats["masks_compared"] >= len(expected["scores"]) // 2
    flipped = dict(got, masks=~got["masks"])  # the mask check has teeth
    assert match_fraction(expected, flipped) < 0.5


def test_semantic_fpn_onnx_logits(tmp_path):
    from segmentation.config import SegConfig
    from segmentation.models import build_segmentation_model
    from engine.export import ort_session, run_session

    config = "configs/demo/shapes_semantic.yaml"
    torch.manual_seed(0)
    model = build_segmentation_model(load_config(SegConfig, config, ["model.backbone.weights=null"]).model).eval()
    weights = str(tmp_path / "seg.pth")
    save_checkpoint(weights, {"model": model.state_dict(), "meta": {"task": KIND_SEMANTIC_SEGMENTATION}})
    out = str(tmp_path / "seg.onnx")
    _export_tool().cli(["--config", config, "--weights", weights, "--format", "onnx", "--out", out])
    images = torch.randint(0, 256, (2, 3, 96, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(images)["out"].numpy()
    got = run_session(ort_session(out), {"images": images.numpy()})["logits"]
    assert got.shape == (2, 7, 96, 160)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
