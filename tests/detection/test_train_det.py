"""train_det end to end on a tiny synthetic COCO set: awkward ids and annotations, evaluation that
maps labels back to the dataset's ids, torchrun on two CPU processes, and an exact kill-and-resume."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from detection.synthetic import make_shapes_dataset
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "demo", "shapes_mask_rcnn.yaml")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """12 training and 6 validation images of 64 px. Category ids 3, 7, 11, ... (not from 1), image
    ids from 0; one image loses its annotations, one annotation its segmentation."""
    out = tmp_path_factory.mktemp("shapes")
    files = make_shapes_dataset(str(out), num_train=12, num_val=6, size=64, seed=3)
    train_json, train_dir = files["train"]
    with open(train_json) as f:
        data = json.load(f)
    assert min(im["id"] for im in data["images"]) == 0
    assert min(c["id"] for c in data["categories"]) > 1
    first_image = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first_image]
    data["annotations"][0]["segmentation"] = []
    with open(train_json, "w") as f:
        json.dump(data, f)
    val_json, val_dir = files["val"]
    return {"train": (train_json, train_dir), "val": (val_json, val_dir),
            "num_classes": len(data["categories"]), "category_ids": sorted(c["id"] for c in data["categories"])}


def _overrides(shapes, out_dir, **extra):
    values = {
        "output_dir": out_dir, "seed": 1, "deterministic": True,
        "data.train.0.json": shapes["train"][0], "data.train.0.images": shapes["train"][1],
        "data.val.0.json": shapes["val"][0], "data.val.0.images": shapes["val"][1],
        "data.num_workers": 0, "model.num_classes": shapes["num_classes"], "model.fpn_channels": 32,
        "model.backbone.freeze_at": 0, "model.backbone.norm": "GN",
        "input.min_size_train": "[64]", "input.max_size_train": 64,
        "input.min_size_test": 64, "input.max_size_test": 64,
        "solver.ims_per_batch": 4, "solver.max_iter": 6, "solver.steps": "[4]", "solver.warmup_iters": 2,
        "solver.base_lr": 0.01, "solver.checkpoint_period": 3, "test.ims_per_batch": 2,
        "logging.progress_bar": False, "logging.tensorboard": False, "logging.log_period": 1,
        "test.report": False,  # the reference run and the torchrun run write theirs (checked below)
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return env


def _command(shapes, out_dir, *extra, **overrides):
    return [sys.executable, os.path.join(ROOT, "tools", "train_det.py"), "--config", CONFIG,
            *extra, *_overrides(shapes, out_dir, **overrides)]


def _run(cmd):
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("det") / "reference")
    result = _run(_command(shapes, out, **{"test.report": True}))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_training_evaluates_with_the_dataset_ids(reference, shapes):
    with open(os.path.join(reference, "results.json")) as f:
        results = json.load(f)
    for iou_type in ("bbox", "segm"):
        assert set(results[iou_type]) == {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                          "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
    final = load_checkpoint(os.path.join(reference, "model_final.pth"))
    assert final["meta"]["category_ids"] == shapes["category_ids"]
    assert final["meta"]["mask"] is True
    with open(os.path.join(reference, "metrics.jsonl")) as f:
        losses = [json.loads(line) for line in f if '"loss"' in line]
    assert [r["iter"] for r in losses] == [1, 2, 3, 4, 5, 6]


def _assert_same_weights(run_a, run_b):
    a = load_checkpoint(os.path.join(run_a, "model_final.pth"))["model"]
    b = load_checkpoint(os.path.join(run_b, "model_final.pth"))["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def test_sigkill_after_a_checkpoint_then_resume_is_bitwise_equal(shapes, reference, tmp_path):
    out = str(tmp_path / "killed")
    # Slow the run down a little after the first checkpoint so the kill lands between checkpoints.
    proc = subprocess.Popen(_command(shapes, out), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = os.path.join(out, "checkpoints", "model_0000003.pth")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(first), proc.stderr.read() if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    result = _run(_command(shapes, out, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    _assert_same_weights(reference, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_matches_one(shapes, reference, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", *_command(shapes, out, **{"test.report": True})[1:]]
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    # Not equal to the one-process run: the RPN and RoI samplers draw their anchors and proposals
    # from each rank's own random stream. Same shapes, finite, trained, and evaluated over both shards.
    ref = load_checkpoint(os.path.join(reference, "model_final.pth"))["model"]
    ddp = load_checkpoint(os.path.join(out, "model_final.pth"))["model"]
    assert ref.keys() == ddp.keys()
    assert all(torch.isfinite(v).all() for v in ddp.values() if v.is_floating_point())
    head = "roi_heads.box_predictor.cls_score.weight"
    assert (ddp[head] - ref[head]).abs().max() < 0.05
    with open(os.path.join(out, "results.json")) as f:
        assert "bbox" in json.load(f)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert sum('"loss"' in line for line in f) == 6
    with open(os.path.join(out, "report", "index.html")) as f:  # rank 0 wrote it, with every section
        html = f.read()
    assert all(f">{s}</h2>" in html for s in ("Per class", "Error breakdown", "The run")) and "segm AP" in html


def test_training_writes_the_report(reference):
    """The final evaluation writes output_dir/report: the detection sections and the run's, whole in a
    real browser (tests/report_browser.py)."""
    from detection.report import SECTIONS
    from tests.report_browser import check_report

    path = os.path.join(reference, "report", "index.html")
    page = check_report(path, [*SECTIONS, "The run"])
    for expected in ("Mask R-CNN (FPN, resnet18)", "segm AP", "training curves", "hardware and precision",
                     "validation set", "label space", "precision: "):
        assert expected in page.text, expected
    assert len(page.images) >= 3  # PR and breakdown (a panel each for bbox and segm), curves; gallery
    assert "ground truth \\ detected as" in page.text  # the confusion matrix: an HTML table, as the other tasks'
    assert "missed — ground truth outlined thin (missed: thick), detections filled" in page.text  # masks drawn
