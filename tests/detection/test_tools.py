"""tools/transfer.py on whole torchvision models, then tools/predict.py with the converted weights."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision

from torchvision_reference import torchvision_rcnn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 80), (72, 64)]):
        cv2.imwrite(str(folder / f"im{i}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_transfer_then_predict_mask_rcnn(tmp_path, images):
    torch.manual_seed(0)
    src = tmp_path / "maskrcnn_resnet50_fpn.pth"
    torch.save(torchvision_rcnn(mask=True).state_dict(), src)
    out = tmp_path / "converted.pth"
    result = tool("tools/transfer.py", str(src), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "configs/detection/mask_rcnn_R50_FPN_1x.yaml" in result.stdout
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["mask"] and meta["category_ids"] == list(range(1, 91))

    pred_dir = tmp_path / "pred"
    result = tool("tools/predict.py", "--config", "configs/detection/mask_rcnn_R50_FPN_1x.yaml",
                  "--weights", str(out), "--input", str(images / "im0.jpg"), str(images / "im*.jpg"),
                  "--output", str(pred_dir), "--score-thresh", "0.99",
                  "input.min_size_test=64", "input.max_size_test=96", "model.roi_heads.score_thresh=0.0")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in pred_dir.iterdir()) == ["im0.png", "im1.png", "log.txt", "predictions.json"]
    assert "share a file name" not in result.stdout
    records = json.loads((pred_dir / "predictions.json").read_text())
    assert records  # the random detector's scores are low, but score_thresh 0 keeps them
    top = {name: max(r["score"] for r in records if r["file_name"] == name) for name in ("im0.jpg", "im1.jpg")}
    assert (f"2 of 2 images have no detection with score >= --score-thresh 0.99: im0.jpg (top score "
            f"{top['im0.jpg']:.3f}), im1.jpg (top score {top['im1.jpg']:.3f})") in result.stdout
    for r in records:
        assert set(r) == {"file_name", "bbox", "score", "category_id", "category_name", "segmentation"}
        assert r["file_name"] in ("im0.jpg", "im1.jpg") and 1 <= r["category_id"] <= 90
        assert r["category_name"] == meta["class_names"][meta["category_ids"].index(r["category_id"])]
        x, y, w, h = r["bbox"]
        limit = (80, 60) if r["file_name"] == "im0.jpg" else (64, 72)
        assert w >= 0 and h >= 0 and x + w <= limit[0] + 1e-3 and y + h <= limit[1] + 1e-3
        assert r["segmentation"]["size"] == [limit[1], limit[0]] and isinstance(r["segmentation"]["counts"], str)
    assert cv2.imread(str(pred_dir / "im0.png")).shape == (60, 80, 3)


def test_transfer_then_predict_semantic(tmp_path, images):
    torch.manual_seed(0)
    src = tmp_path / "fcn_resnet50.pth"
    torch.save(torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                            aux_loss=True).state_dict(), src)
    out = tmp_path / "fcn.pth"
    result = tool("tools/transfer.py", str(src), "--out", str(out), "--format", "torchvision-segmentation")
    assert result.returncode == 0, result.stderr
    pred_dir = tmp_path / "pred"
    result = tool("tools/predict.py", "--config", "configs/segmentation/fcn_R50_coco.yaml", "--weights", str(out),
                  "--input", str(images), "--output", str(pred_dir))
    assert result.returncode == 0, result.stderr
    labels = cv2.imread(str(pred_dir / "im1_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (72, 64) and labels.max() < 21
    records = json.loads((pred_dir / "predictions.json").read_text())
    assert sum(records[1]["pixels"].values()) == 72 * 64


def test_transfer_refuses_what_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = tool("tools/transfer.py", str(bad), "--out", str(tmp_path / "x.pth"), "--format", "torchvision-detection")
    assert result.returncode == 1 and "bad.pth" in result.stderr
    assert not (tmp_path / "x.pth").exists()


def _predict_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_predict", os.path.join(ROOT, "tools", "predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_names_inputs_that_share_a_file_name_by_their_path(tmp_path, capsys):
    # photos/a.jpg and more/a.jpg (and a.png beside a.jpg) would write the same a.png: each output is
    # named by its path instead, and its records say which file it is about
    files = [str(tmp_path / "photos" / "a.jpg"), str(tmp_path / "more" / "a.jpg"), str(tmp_path / "b.jpg"),
             str(tmp_path / "more" / "a.png"), str(tmp_path / "photos__a_jpg.png")]
    names = _predict_module().output_names(files)
    assert names == {
        files[0]: ("photos__a_jpg", os.path.join("photos", "a.jpg")),
        files[1]: ("more__a_jpg", os.path.join("more", "a.jpg")),
        files[2]: ("b", "b.jpg"),
        files[3]: ("more__a_png", os.path.join("more", "a.png")),
        files[4]: ("photos__a_jpg_2", "photos__a_jpg.png"),  # its own name met a renamed one
    }
    assert "3 inputs share a file name: their outputs are named by their path" in capsys.readouterr().out
    single = _predict_module().output_names([str(tmp_path / "x" / "a.jpg"), str(tmp_path / "y" / "b.jpg")])
    assert single == {str(tmp_path / "x" / "a.jpg"): ("a", "a.jpg"), str(tmp_path / "y" / "b.jpg"): ("b", "b.jpg")}
