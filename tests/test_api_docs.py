"""Every Python example of docs/api.md runs as written, from a folder holding (generated) files at the
paths the examples name: whole-model weights, a classifier run, COCO files. None of them needs the
backbone's starting weights a config names when whole-model weights are given."""
from __future__ import annotations

import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def api_examples():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    heading = None
    examples = []
    for match in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1).strip()
        else:
            examples.append(pytest.param(match.group(2), id=heading))
    return examples


def _coco(path, images_dir, with_image=True):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if with_image:
        os.makedirs(images_dir, exist_ok=True)
        cv2.imwrite(os.path.join(images_dir, "a.png"), np.full((48, 64, 3), 90, np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": [{"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [8, 8, 20, 16], "area": 320,
                             "iscrowd": 0}]}
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def api_folder(tmp_path_factory):
    """The files the examples name, generated (random weights); the configs the repository's own."""
    from detection.weights import convert_torchvision_detection
    from engine.checkpoint import KIND_CLASSIFICATION, save_checkpoint
    from segmentation.weights import convert_torchvision_segmentation

    folder = tmp_path_factory.mktemp("api")
    shutil.copytree(os.path.join(ROOT, "configs"), folder / "configs")
    # The examples' configs at test sizes (the code runs as written; CPU time is what shrinks): each
    # becomes the repository's file as its _base_ with smaller inference sizes on top.
    for name, small in SMALL.items():
        path = folder / "configs" / name
        full = path.with_name(path.stem + "_full.yaml")
        path.rename(full)
        path.write_text(f"_base_: {full.name}\n{small}\n")
    os.makedirs(folder / "weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), folder / "resnet50-0676ba61.pth")
    # whole models as tools/transfer.py writes them; NOT weights/resnet50_backbone.pth, which the
    # configs name as the backbone's starting weights: prediction must not need it
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state, meta = convert_torchvision_detection(detector.state_dict())
    save_checkpoint(str(folder / "weights" / "frcnn_R50_FPN.pth"), {"model": state, "meta": meta})
    segmenter = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                   num_classes=21, aux_loss=True)
    state, meta = convert_torchvision_segmentation(segmenter.state_dict())
    save_checkpoint(str(folder / "weights" / "deeplabv3_R50.pth"), {"model": state, "meta": meta})
    from backbones import build_classifier

    classifier = build_classifier("resnet18", 4)
    save_checkpoint(str(folder / "runs" / "shapes_resnet18" / "model_final.pth"), {
        "model": classifier.state_dict(),
        "meta": {"task": KIND_CLASSIFICATION, "class_names": ["circle", "square", "triangle", "star"],
                 "num_classes": 4, "backbone": {"name": "resnet18", "options": {}},
                 "eval": {"resize_size": 36, "crop_size": 32},
                 "input_norm": {"color": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225]}}})
    _coco(str(folder / "instances_val2017.json"), str(folder / "val_images"), with_image=False)
    with open(folder / "detections.json", "w") as f:
        json.dump([{"image_id": 1, "category_id": 3, "bbox": [8, 8, 20, 16], "score": 0.9}], f)
    _coco(str(folder / "my" / "train.json"), str(folder / "my" / "images"))
    return folder


SMALL = {"detection/faster_rcnn_R50_FPN_1x.yaml": "input: {min_size_test: 96, max_size_test: 128}",
         "segmentation/deeplabv3_R50_coco.yaml": "data: {base_size: 64}"}

# Lines that cannot run here, each with the reason; everything else runs as written.
NOT_RUN = {
    # training Mask R-CNN R50 for 100 iterations on COCO (tests/detection/test_train_det.py trains)
    "results = Trainer(cfg, DetectionTask(cfg)).train()",
}


@pytest.mark.parametrize("code", api_examples())
def test_api_example_runs_as_written(code, api_folder, monkeypatch):
    from backbones.transfer import transfer_weights

    monkeypatch.chdir(api_folder)
    starting = api_folder / "weights" / "resnet50_backbone.pth"  # what the configs start training from
    if "build_detector(" in code:  # building a model to train reads them; prediction must not
        transfer_weights(str(api_folder / "resnet50-0676ba61.pth"), str(starting))
    elif starting.exists():
        starting.unlink()
    lines = [line for line in code.splitlines() if line.split("#")[0].strip() not in NOT_RUN]
    names = {"images": torch.rand(1, 3, 64, 64),
             "rgb_uint8_image": np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)}
    exec(compile("\n".join(lines), "docs/api.md", "exec"), names)


def test_every_example_is_found():
    assert [p.id for p in api_examples()] == ["Backbones", "Prediction", "Building and training models",
                                              "COCO evaluation and dataset checks"]
