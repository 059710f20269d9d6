"""tools/train_seg.py: a short run writes results.json with sem_seg.mIoU; --eval-only reproduces it."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from segmentation import CocoSemanticSegmentation, SemanticPredictor
from seg_testutils import REPO, shapes, write_config

sys.path.insert(0, os.path.join(REPO, "tools"))
import train_seg  # noqa: E402  (tools/ is not a package; main() runs in-process)

pytestmark = pytest.mark.slow


@pytest.fixture
def restore_torch_state():
    det, rng = torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    yield
    torch.use_deterministic_algorithms(det)
    torch.set_rng_state(rng)


def test_short_run_then_eval_only(tmp_path, restore_torch_state):
    data = shapes(tmp_path / "shapes")
    config = write_config(tmp_path, data, model={"aux_loss": True}, test={"report": True})
    results = train_seg.main(["--config", config])
    out = tmp_path / "run"
    with open(out / "results.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    sem = saved["sem_seg"]
    assert 0.0 <= sem["mIoU"] <= 100.0 and 0.0 <= sem["pixel_accuracy"] <= 100.0
    assert list(sem["per_class_IoU"]) == ["background", "circle", "square", "triangle", "star", "ellipse", "cross"]

    ckpt = load_checkpoint(str(out / "model_final.pth"))
    meta = ckpt["meta"]
    assert meta["task"] == "semantic_segmentation" and meta["head"] == "semantic_fpn"
    assert meta["class_names"][1] == "circle" and meta["input_norm"]["color"] == "RGB"
    assert any(k.startswith("aux_classifier.") for k in ckpt["model"])
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert {"loss_seg", "loss_aux"} <= set(records[0])
    log = (out / "log.txt").read_text()
    assert "training set: " in log and "; per class: circle " in log and "evaluation at iter" in log
    assert "sem_seg mIoU " in log  # the primary number on the evaluation line
    report = (out / "report" / "index.html").read_text()  # the final evaluation's report
    for section in ("Semantic segmentation", "Confusion matrix", "Worst images", "The run"):
        assert f"<h2>{section}</h2>" in report
    assert "training set" in report  # the dataset summary in the run's section

    # evaluation of the saved weights, without the training-only aux head, gives the same numbers
    again = train_seg.main(["--config", config, "--eval-only", f"model.weights={out / 'model_final.pth'}",
                            "model.aux_loss=false"])
    assert again["sem_seg"] == results["sem_seg"]
    assert os.path.isfile(out / "results_eval.json")

    # the predictor gives the evaluation's label maps (no resize in this config)
    predictor = SemanticPredictor(config, str(out / "model_final.pth"), device="cpu", overrides=["model.aux_loss=false"])
    assert predictor.class_names[1] == "circle"
    val = CocoSemanticSegmentation(*data["val"], categories="all")
    image = val.read_pair(0)[0]
    labels = predictor(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int64
    with torch.no_grad():
        direct = predictor.model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])["out"].argmax(1)[0]
    assert np.array_equal(labels, direct.numpy())


def test_bad_config_exits_2(tmp_path, capsys):
    data = shapes(tmp_path / "shapes", num_train=2, num_val=1)
    config = write_config(tmp_path, data)
    with pytest.raises(SystemExit) as e:
        train_seg.main(["--config", config, "model.head=deeplab"])
    assert e.value.code == 2
    assert "model.head: 'deeplab' is not a valid value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train_seg.main(["--config", config, "model.backbone.dilation=[2,4]"])
    assert e.value.code == 2
