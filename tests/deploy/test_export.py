"""tools/export.py: a torchvision Faster R-CNN converted with tools/transfer.py, exported to ONNX and run
by ONNX Runtime at two image sizes matches the eager model; a ResNet-18 classifier's logits too
(ONNX and torch.export); what cannot be exported is one line, exit 1."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
import torchvision
import yaml

from detection.export import OnnxPredictor, _sample_images, match_fraction
from detection.predictor import Predictor
from engine.checkpoint import KIND_CLASSIFICATION, save_checkpoint
from engine.export import onnx_metadata

pytest.importorskip("onnxruntime")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FPN_CONFIG = "configs/detection/faster_rcnn_R50_FPN_1x.yaml"
SMALL = ["model.num_classes=auto", "input.min_size_test=256", "input.max_size_test=320"]


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def untrained_torchvision_detector(seed: int = 0) -> torch.nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn without any weights, made to behave like a trained one:
    batch-norm statistics measured on images, and the box regressors of the RPN and the head scaled
    down so that boxes stay near their anchors (random regressors make sub-pixel boxes)."""
    from torchvision_reference import calibrate

    torch.manual_seed(seed)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    tv = calibrate(tv, seed=seed).eval()
    with torch.no_grad():
        tv.rpn.head.bbox_pred.weight.mul_(0.1)
        tv.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
    return tv


@pytest.fixture(scope="module")
def frcnn(tmp_path_factory):
    """(converted checkpoint, exported .onnx): transfer.py then export.py, as a user runs them."""
    tmp = tmp_path_factory.mktemp("frcnn")
    torch.save(untrained_torchvision_detector().state_dict(), tmp / "fasterrcnn_resnet50_fpn.pth")
    assert _tool("transfer").main([str(tmp / "fasterrcnn_resnet50_fpn.pth"), "--out", str(tmp / "frcnn.pth")]) == 0
    _tool("export").cli(["--config", FPN_CONFIG, "--weights", str(tmp / "frcnn.pth"), "--format", "onnx",
                         "--out", str(tmp / "frcnn.onnx"), *SMALL])
    return str(tmp / "frcnn.pth"), str(tmp / "frcnn.onnx")


def test_torchvision_fasterrcnn_onnx_matches_eager_at_two_sizes(frcnn):
    weights, onnx_file = frcnn
    eager = Predictor(FPN_CONFIG, weights, device="cpu", fast=False, precision="off",
                      overrides=["model.backbone.weights=null", *SMALL])
    runtime = OnnxPredictor(onnx_file)
    for image in _sample_images([(300, 220), (200, 330)], seed=7):  # sizes the export never saw
        expected, got = eager(image), runtime(image)
        assert len(expected["scores"]) >= 20
        assert got["boxes"].shape[1] == 4 and got["category_ids"].dtype == np.int64
        assert match_fraction(expected, got) >= 0.99
        # the check has teeth: a box moved by 2% of its size, or another label, no longer matches
        moved = dict(got, boxes=got["boxes"] * np.float32(1.02))
        assert match_fraction(expected, moved) < 0.5
        relabelled = dict(got, category_ids=got["category_ids"] + 1)
        assert match_fraction(expected, relabelled) == 0
    meta = onnx_metadata(onnx_file)
    assert meta["reskit.category_ids"] == list(range(1, 91))  # torchvision's COCO ids, as the checkpoint says
    assert meta["reskit.class_names"][0] == "person"
    assert meta["reskit.input_norm"]["mean"] == [0.485, 0.456, 0.406]
    assert runtime.category_names[1] == "person"


def test_detector_torch_export_is_one_line_and_exit_1(frcnn, capsys):
    weights, _ = frcnn
    with pytest.raises(SystemExit) as stop:
        _tool("export").cli(["--config", FPN_CONFIG, "--weights", weights, "--format", "torch-export", *SMALL])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch-export" in err and "--format onnx" in err


@pytest.fixture(scope="module")
def resnet18_classifier(tmp_path_factory):
    """torchvision's ResNet-18 (random weights, non-trivial BN statistics) as a classification checkpoint."""
    tmp = tmp_path_factory.mktemp("r18")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    names = [f"shape {i}" for i in range(5)]
    meta = {"task": KIND_CLASSIFICATION, "backbone": {"name": "resnet18", "options": {}}, "num_classes": 5,
            "class_names": names, "eval": {"resize_size": 72, "crop_size": 64},
            "input_norm": {"color": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    save_checkpoint(str(tmp / "r18.pth"), {"model": model.state_dict(), "meta": meta})
    return model, str(tmp / "r18.pth"), tmp


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_resnet18_classifier_logits(resnet18_classifier, fmt, capsys):
    model, weights, tmp = resnet18_classifier
    out = str(tmp / ("r18.onnx" if fmt == "onnx" else "r18.pt2"))
    _tool("export").cli(["--weights", weights, "--format", fmt, "--out", out])
    assert "verified" in capsys.readouterr().out
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        expected = model((images - mean) / std).numpy()  # torchvision's own network and normalisation
    if fmt == "onnx":
        from engine.export import ort_session, run_session

        got = run_session(ort_session(out), {"images": images.numpy()})["logits"]
        assert onnx_metadata(out)["reskit.class_names"] == [f"shape {i}" for i in range(5)]
    else:
        got = torch.export.load(out).module()(images).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    assert np.abs(expected).max() > 1e-2  # not trivially zero


def test_backbone_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from backbones import build_backbone

    save_checkpoint(str(tmp_path / "bb.pth"), {"model": build_backbone("resnet18").state_dict(),
                                               "meta": {"task": "backbone"}})
    with pytest.raises(SystemExit) as stop:
        _tool("export").cli(["--weights", str(tmp_path / "bb.pth"), "--format", "onnx"])
    assert stop.value.code == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_coco_onnxruntime_gives_the_eager_ap(frcnn, tmp_path, capsys):
    """COCO AP on a tiny generated set whose ground truth is the eager model's confident detections
    (so eager AP is high, not 0): ONNX Runtime's AP is the same within 0.1. The eager evaluation
    batches the two images, of two sizes (test.ims_per_batch=2): padded together they gave AP 15 on
    this untrained detector instead of 100; evaluation now runs each size apart (detection.task)."""
    import cv2
    from torchvision.models import _meta

    weights, onnx_file = frcnn
    eager = Predictor(FPN_CONFIG, weights, device="cpu", fast=False, precision="off",
                      overrides=["model.backbone.weights=null", *SMALL])
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i, image in enumerate(_sample_images([(256, 320), (288, 224)], seed=11)):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), image[:, :, ::-1])
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": image.shape[0], "width": image.shape[1]})
        pred = eager(image)
        for box, score, cat in zip(pred["boxes"], pred["scores"], pred["category_ids"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            if score >= 0.5 and x2 - x1 >= 2 and y2 - y1 >= 2:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cat),
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    assert len(annotations) >= 20
    names = list(_meta._COCO_CATEGORIES)
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": i, "name": names[i]} for i in range(1, 91)]}
    (tmp_path / "val.json").write_text(json.dumps(gt))
    common = ["--config", FPN_CONFIG, f"data.val.0.json={tmp_path / 'val.json'}",
              f"data.val.0.images={tmp_path / 'images'}", "data.num_workers=0", "solver.amp=off",
              "test.ims_per_batch=2", *SMALL]
    tool = _tool("eval_coco")
    tool.main(["--weights", weights, "--output", str(tmp_path / "eager.json"), *common,
               f"output_dir={tmp_path / 'eager'}", "model.backbone.weights=null"])
    tool.main(["--weights", onnx_file, "--backend", "onnxruntime", "--output", str(tmp_path / "ort.json"),
               *common, f"output_dir={tmp_path / 'ort'}"])
    eager_ap = json.loads((tmp_path / "eager.json").read_text())["bbox"]["AP"]
    ort_ap = json.loads((tmp_path / "ort.json").read_text())["bbox"]["AP"]
    assert eager_ap > 50
    assert abs(eager_ap - ort_ap) <= 0.1, (eager_ap, ort_ap)


def test_predict_tool_runs_the_onnx_file(frcnn, tmp_path, monkeypatch, capsys):
    import cv2

    _, onnx_file = frcnn
    image = _sample_images([(250, 310)], seed=4)[0]
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    monkeypatch.setattr("sys.argv", ["predict.py", "--config", FPN_CONFIG, "--weights", onnx_file,
                                     "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "out")])
    _tool("predict").main()
    assert "ONNX Runtime" in capsys.readouterr().out
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    expected = OnnxPredictor(onnx_file)(image)
    assert len(records) == len(expected["scores"]) > 0
    assert records[0]["category_id"] == int(expected["category_ids"][0])
