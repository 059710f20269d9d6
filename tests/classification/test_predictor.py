"""ClassificationPredictor gives what the task's own evaluation gives, image by image."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from classification import ClassificationPredictor
from classification.config import ClsConfig
from classification.evaluation import center_scores
from classification.task import ClassificationTask, collate_eval
from engine.checkpoint import save_checkpoint
from engine.config import from_dict

CONFIG = {
    "model": {"backbone": {"name": "resnet18"}, "num_classes": 4},
    # images of 40 px, shorter side to 36, centre crop of 32: the predictor must resize and crop too
    "data": {"val": [{"synthetic": {"num_images": 8, "image_size": 40, "num_classes": 4, "seed": 3,
                                    "cache": False}}],
             "num_workers": 0, "recipe": "shapes", "crop_size": 32, "resize_size": 36},
    "test": {"ims_per_batch": 4},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A ResNet-18 initialised here (random BN statistics, so that classes differ between images),
    saved as tools/train_cls.py saves it; returns (task, model, checkpoint path, config path)."""
    tmp = tmp_path_factory.mktemp("cls_predictor")
    cfg = from_dict(ClsConfig, json.loads(json.dumps(CONFIG)))
    task = ClassificationTask(cfg, training=False)
    torch.manual_seed(0)
    model = task.build_model()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    weights = str(tmp / "model_final.pth")
    save_checkpoint(weights, {"model": model.state_dict(), "meta": task.checkpoint_meta()})
    config = tmp / "cls.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return task, model, weights, str(config)


def _task_probabilities(task, model):
    """The task's evaluation path: its val set's view, its normalisation, center_scores."""
    batch = collate_eval([task.val_set[i] for i in range(len(task.val_set))])
    with torch.no_grad():
        return center_scores(model, batch["images"], task.normalize).softmax(dim=1), batch["labels"]


@pytest.mark.parametrize("with_config", [False, True])
def test_same_classes_and_probabilities_as_the_task(run, with_config):
    task, model, weights, config = run
    predictor = ClassificationPredictor(config if with_config else None, weights, device="cpu", topk=3,
                                        precision="off")  # fp32, as the reference
    assert predictor.class_names == ["circle", "square", "triangle", "star"]
    expected, labels = _task_probabilities(task, model)
    images = [task.val_set.datasets[0].load(i) for i in range(len(task.val_set))]
    assert images[0].shape == (40, 40, 3) and images[0].dtype == np.uint8
    predictions = predictor(images)
    assert len(predictions) == len(images)
    top1 = np.array([p["labels"][0] for p in predictions])
    assert top1.tolist() == expected.argmax(dim=1).tolist()
    assert len(set(top1.tolist())) > 1  # a test that every image gets the same class would prove little
    for p, probs in zip(predictions, expected):
        best = probs.topk(3)
        np.testing.assert_allclose(p["scores"], best.values.numpy(), rtol=1e-4, atol=1e-6)
        assert p["labels"].tolist() == best.indices.tolist()
        assert p["class_names"] == [predictor.class_names[i] for i in p["labels"]]
        assert p["scores"].dtype == np.float32 and list(p["scores"]) == sorted(p["scores"], reverse=True)
    # the task's own top-1 over the set is the predictor's
    results = task.evaluate(model)
    assert results["top1"] == pytest.approx(100.0 * float(np.mean(top1 == labels.numpy())))
    single = predictor(images[1])
    assert single["labels"].tolist() == predictions[1]["labels"].tolist()


def test_bad_inputs_are_refused(run, tmp_path):
    _, _, weights, _ = run
    predictor = ClassificationPredictor(None, weights, device="cpu")
    assert predictor.topk == 4  # capped at the number of classes
    with pytest.raises(ValueError, match="image 0: expected an RGB uint8 array"):
        predictor(np.zeros((8, 8), np.uint8))
    other = str(tmp_path / "det.pth")
    save_checkpoint(other, {"model": {}, "meta": {"task": "detection"}})
    with pytest.raises(ValueError, match="not a classification checkpoint"):
        ClassificationPredictor(None, other)
