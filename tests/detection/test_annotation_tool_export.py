"""An annotation-tool export (Roboflow style: placeholder category 0 that no annotation uses, image and
annotation ids from 0, ``[x, y, null, null]`` boxes, empty segmentations) trains and evaluates right:
ground truth scored against itself is exactly 100.0 AP with both backends, the placeholder is no
class, and bad validation sets or class counts stop with one line."""
import copy
import json
import os
import subprocess
import sys

import pytest

from coco_fixtures import compressed_rle, random_gt, rect_polygon, roboflow_style, write_json
from detection.annotations import clean_coco, rle_is_valid
from detection.coco import load_coco
from detection.config import DetConfig
from detection.evaluation import BACKENDS, evaluate_results, evaluate_results_file, prepare_ground_truth
from detection.synthetic import make_shapes_dataset
from engine.config import ConfigError, load_config
from engine.data import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "demo", "shapes_mask_rcnn.yaml")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    files = make_shapes_dataset(str(out), num_train=8, num_val=4, size=64, seed=5)
    train = roboflow_style(files["train"][0], str(out / "train_export.json"), null_boxes=2)
    val = roboflow_style(files["val"][0], str(out / "val_export.json"), null_boxes=1)
    return {"train": (str(out / "train_export.json"), files["train"][1]),
            "val": (str(out / "val_export.json"), files["val"][1]), "train_data": train, "val_data": val,
            "shapes_val": files["val"][0]}


def self_results(gt: dict) -> list:
    """Ground truth as detections (score 1), as a results file holds them: records with a usable box."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if all(isinstance(v, (int, float)) for v in a["bbox"])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_against_itself_is_exactly_100(export, tmp_path, backend):
    gt_path = export["val"][0]
    results = write_json(self_results(export["val_data"]), str(tmp_path / "r.json"))
    metrics = evaluate_results_file(gt_path, results, "bbox", backend)
    assert metrics["bbox"]["AP"] == 100.0 and metrics["bbox"]["AP50"] == 100.0


def test_without_renumbering_id_0_would_be_missed(export):
    """The reason for renumbering: pycocotools itself, on the cleaned export with its ids as they are,
    cannot match the ground truth whose id is 0 (so the test above can fail)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = clean_coco(copy.deepcopy(export["val_data"])).data
    assert min(a["id"] for a in data["annotations"]) == 0
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(self_results(data)), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] < 1.0
    prepared = prepare_ground_truth(export["val_data"])
    assert sorted(a["id"] for a in prepared["annotations"]) == list(range(1, len(prepared["annotations"]) + 1))
    assert prepared.cleaning.counts["malformed_bbox"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_polygon_segm_results_are_scored_as_rle(tmp_path, backend):
    gt = random_gt(seed=2)
    for i, a in enumerate(gt["annotations"]):
        a["id"] = i  # from 0, as exports number them
    gt_path = write_json(gt, str(tmp_path / "gt.json"))
    polygons = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                 "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    metrics = evaluate_results_file(gt_path, write_json(polygons, str(tmp_path / "r.json")), "segm", backend)
    assert metrics["segm"]["AP"] == 100.0


def test_empty_results_warn(export, tmp_path, caplog):
    results = write_json([], str(tmp_path / "empty.json"))
    metrics = evaluate_results_file(export["val"][0], results, "bbox")
    assert metrics["bbox"]["AP"] == 0.0
    assert "the results list is empty (no detections): every AP is 0" in caplog.text


def test_bad_records_are_dropped_and_counted_the_same_everywhere(tmp_path):
    gt = random_gt(seed=3)
    gt["images"].append(dict(gt["images"][0]))  # duplicate image record
    extra = [
        {"id": 900, "image_id": 0, "category_id": 3, "bbox": [1, 2, None, None], "area": 0, "iscrowd": 0},
        {"id": 901, "image_id": 0, "category_id": 3, "bbox": [1, 2, "3", 4], "area": 1, "iscrowd": 0},
        {"id": 902, "image_id": 0, "category_id": 3, "bbox": [1, 2, 0, 4], "area": 0, "iscrowd": 0},
        {"id": 903, "image_id": 0, "category_id": 3, "bbox": [500, 2, 5, 4], "area": 20, "iscrowd": 0},
        {"id": 904, "image_id": 0, "category_id": 3, "bbox": [1, 2, 5, 4], "area": 20, "iscrowd": 0,
         "segmentation": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]},
        {"id": 904, "image_id": 0, "category_id": 3, "bbox": [1, 2, 5, 4], "area": 20, "iscrowd": 0},
        {"id": 905, "image_id": 1, "category_id": 3, "bbox": [1, 2, 5, 4], "area": 20, "iscrowd": 1,
         "segmentation": {"counts": "zzzz", "size": [150, 200]}},
    ]
    gt["annotations"] += extra
    path = write_json(gt, str(tmp_path / "gt.json"))
    expected = {"duplicate_image_id": 1, "malformed_bbox": 2, "empty_bbox": 1, "bbox_outside_image": 1,
                "bad_polygon": 1, "duplicate_annotation_id": 1, "bad_rle": 1}
    training = load_coco(path).cleaning
    evaluation = prepare_ground_truth(path).cleaning
    from detection.dataset_check import check_dataset
    report = check_dataset(path, str(tmp_path), check_files=False)
    for counts in (training.counts, evaluation.counts, report.counts):
        assert {k: counts[k] for k in expected} == expected
    assert load_coco(path).num_annotations == len(gt["annotations"]) - 5  # the repaired two stay
    # a corrupt compressed RLE decodes to garbage in pycocotools; ours refuses it, a real one passes
    assert not rle_is_valid({"counts": "zzzz", "size": [150, 200]})
    import numpy as np
    mask = np.zeros((150, 200), np.uint8)
    mask[3:40, 5:9] = 1
    assert rle_is_valid(compressed_rle(mask), 150, 200)
    # both backends evaluate it without a crash and agree
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
           for a in gt["annotations"][:20]]
    a, _ = evaluate_results(path, res, "bbox", "faster_coco_eval")
    b, _ = evaluate_results(path, res, "bbox", "pycocotools")
    assert a == pytest.approx(b, abs=1e-10, nan_ok=True)


def test_no_usable_annotation_or_too_many_dropped_stops(tmp_path):
    gt = random_gt(seed=4)
    no_key = write_json({k: v for k, v in gt.items() if k != "annotations"}, str(tmp_path / "nokey.json"))
    with pytest.raises(DataError, match=r"nokey.json: no 'annotations' key, so nothing to train on"):
        load_coco(no_key)
    with pytest.raises(DataError, match=r"no 'annotations' key"):
        prepare_ground_truth(no_key)
    broken = copy.deepcopy(gt)
    for a in broken["annotations"]:
        a["bbox"] = [0, 0, None, None]
    path = write_json(broken, str(tmp_path / "broken.json"))
    n = len(broken["annotations"])
    with pytest.raises(DataError, match=rf"broken.json: none of its {n} annotations is usable \({n} malformed_bbox; "
                                        r"e.g. annotation id 1 \(image id 0\): bbox \[0, 0, None, None\]\)"):
        load_coco(path)
    half = copy.deepcopy(gt)
    for a in half["annotations"][: n // 2]:
        a["bbox"] = [0, 0, None, None]
    path = write_json(half, str(tmp_path / "half.json"))
    with pytest.raises(DataError, match=r"more than data.max_dropped_fraction=0.25; fix the json"):
        load_coco(path, 0.25)
    assert load_coco(path, 0.9).num_annotations == n - n // 2


def _cfg(export, **extra):
    overrides = {"data.train.0.json": export["train"][0], "data.train.0.images": export["train"][1],
                 "data.val.0.json": export["val"][0], "data.val.0.images": export["val"][1],
                 "model.mask": False, "data.num_workers": 0, "output_dir": "/tmp/unused"}
    overrides.update(extra)
    return load_config(DetConfig, CONFIG, [f"{k}={v}" for k, v in overrides.items()])


def test_label_space_leaves_the_placeholder_out(export, caplog):
    from detection.task import DetectionTask

    task = DetectionTask(_cfg(export, **{"model.num_classes": "auto"}))
    task.train_dataset()
    names = [c["name"] for c in export["train_data"]["categories"]]
    assert task.cfg.model.num_classes == len(names) - 1
    assert task.class_names() == names[1:] and 0 not in task.contiguous_to_id().values()
    assert "label space: id 0 'pieces' left out, no training annotation uses it" in caplog.text
    keep = DetectionTask(_cfg(export, **{"model.num_classes": "auto", "data.keep_unused_categories": True}))
    keep.train_dataset()
    assert keep.class_names() == names and keep.cfg.model.num_classes == len(names)
    wrong = DetectionTask(_cfg(export, **{"model.num_classes": len(names)}))
    with pytest.raises(ConfigError, match=rf"model.num_classes={len(names)}, but the training annotations use "
                                          rf"{len(names) - 1} categories \(unused, left out: id 0 'pieces'\); "
                                          rf"set model.num_classes={len(names) - 1} or auto"):
        wrong.train_dataset()


def test_validation_set_checked_before_training(export, tmp_path):
    from detection.task import DetectionTask

    val = copy.deepcopy(export["val_data"])
    val["categories"].append({"id": 42, "name": "hexagon", "supercategory": "pieces"})
    val["annotations"][0]["category_id"] = 42
    path = write_json(val, str(tmp_path / "val_other_ids.json"))
    task = DetectionTask(_cfg(export, **{"data.val.0.json": path}))
    with pytest.raises(DataError, match=r"data.val\[0\] .*val_other_ids.json: annotations use category ids "
                                        r"42 'hexagon' that the training label space"):
        task.train_dataset()
    val = copy.deepcopy(export["val_data"])
    val["images"][1]["file_name"] = "gone.png"
    path = write_json(val, str(tmp_path / "val_missing.json"))
    task = DetectionTask(_cfg(export, **{"data.val.0.json": path}))
    with pytest.raises(DataError, match=r"1 of 4 image files not found in .* \(e.g. gone.png\)"):
        task.train_dataset()


def _train(export, out_dir, *extra):
    overrides = {
        "output_dir": out_dir, "seed": 1, "data.train.0.json": export["train"][0],
        "data.train.0.images": export["train"][1], "data.val.0.json": export["val"][0],
        "data.val.0.images": export["val"][1], "data.num_workers": 0, "model.num_classes": "auto",
        "model.mask": False, "model.fpn_channels": 32, "model.backbone.norm": "GN", "model.backbone.freeze_at": 0,
        "input.min_size_train": "[64]", "input.max_size_train": 64, "input.min_size_test": 64,
        "input.max_size_test": 64, "solver.ims_per_batch": 2, "solver.max_iter": 2, "solver.steps": "[1]",
        "solver.warmup_iters": 1, "solver.checkpoint_period": 10, "solver.amp": "off", "test.ims_per_batch": 2,
        "logging.progress_bar": False, "logging.tensorboard": False, "logging.log_period": 1,
    }
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_det.py"), "--config", CONFIG,
           *[f"{k}={v}" for k, v in overrides.items()], *extra]
    return subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_train_on_the_export_then_ground_truth_against_itself(export, tmp_path):
    import torch

    out = str(tmp_path / "run")
    result = _train(export, out)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "label space: id 0 'pieces' left out, no training annotation uses it" in log
    assert "no starting weights (model.weights and model.backbone.weights are null)" in log  # said, not silent
    assert "dropped: 2 malformed_bbox" in log  # the two [x, y, null, null] boxes of the training json
    assert "ground truth" in log and "dropped: 1 malformed_bbox" in log  # the validation json's, at evaluation
    meta = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["meta"]
    names = [c["name"] for c in export["train_data"]["categories"]]
    assert meta["class_names"] == names[1:] and 0 not in meta["category_ids"]
    final = json.load(open(os.path.join(out, "results.json")))
    assert final["bbox"]["AP"] is not None
    assert sorted(final["bbox_per_category"]) == sorted(names[1:])  # the placeholder is not evaluated as a class
    # the results file training wrote is read back by eval_coco.py, and the ground truth scores 100
    results = write_json(self_results(export["val_data"]), str(tmp_path / "self.json"))
    for backend in BACKENDS:
        tool = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval_coco.py"), "--gt", export["val"][0],
                               "--results", results, "--backend", backend],
                              capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert tool.returncode == 0, tool.stderr
        assert json.load(open(os.path.join(tmp_path, "results.json")))["bbox"]["AP"] == 100.0
        assert "dropped: 1 malformed_bbox" in tool.stdout + tool.stderr
    wrong = _train(export, str(tmp_path / "wrong"), f"model.num_classes={len(names)}")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"error: model.num_classes={len(names)}, but the training annotations use {len(names) - 1} categories "
        f"(unused, left out: id 0 'pieces'); set model.num_classes={len(names) - 1} or auto")
