"""Semantic metrics equal a direct numpy computation of IoU and accuracy, ignore index included."""
import numpy as np
import pytest
import torch

from segmentation.metrics import ConfusionMatrix, segmentation_metrics


def numpy_metrics(target, prediction, num_classes, ignore_index):
    """Per-class IoU and accuracy straight from the label maps (no confusion matrix)."""
    valid = target != ignore_index
    t, p = target[valid], prediction[valid]
    iou, acc = [], []
    for c in range(num_classes):
        inter = np.sum((t == c) & (p == c))
        union = np.sum((t == c) | (p == c))
        iou.append(100.0 * inter / union if union else None)
        acc.append(100.0 * inter / np.sum(t == c) if np.sum(t == c) else None)
    mean = lambda xs: np.mean([x for x in xs if x is not None])  # noqa: E731
    return {"iou": iou, "acc": acc, "mIoU": mean(iou), "mean_accuracy": mean(acc),
            "pixel_accuracy": 100.0 * np.sum(t == p) / t.size}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_on_random_label_maps(seed):
    rng = np.random.default_rng(seed)
    num_classes, ignore = 6, 255
    matrix = ConfusionMatrix(num_classes, ignore)
    targets, predictions = [], []
    for _ in range(4):  # several updates of different sizes accumulate
        h, w = rng.integers(5, 40, size=2)
        target = rng.integers(0, num_classes - 1, size=(h, w))  # class 5 never in the ground truth ...
        target[rng.random((h, w)) < 0.2] = ignore
        prediction = rng.integers(0, num_classes - 2, size=(h, w))  # ... class 4 never predicted
        copy = (rng.random((h, w)) < 0.5) & (target < num_classes - 2)  # many right answers
        prediction[copy] = target[copy]
        # predictions at ignored pixels stay random: they must not count
        matrix.update(torch.from_numpy(target), torch.from_numpy(prediction))
        targets.append(target.ravel())
        predictions.append(prediction.ravel())
    expected = numpy_metrics(np.concatenate(targets), np.concatenate(predictions), num_classes, ignore)
    got = matrix.compute([f"c{i}" for i in range(num_classes)])

    assert int(matrix.matrix.sum()) == int(sum((t != ignore).sum() for t in targets))
    for c in range(num_classes):
        e, g = expected["iou"][c], got["per_class_IoU"][f"c{c}"]
        assert (e is None and g is None) or g == pytest.approx(e, abs=1e-9), c
        e, g = expected["acc"][c], got["per_class_accuracy"][f"c{c}"]
        assert (e is None and g is None) or g == pytest.approx(e, abs=1e-9), c
    # class 5: never in the ground truth, never predicted -> no IoU, left out of the mean
    assert got["per_class_IoU"]["c5"] is None
    # class 4: in the ground truth, never predicted -> IoU 0, counted
    assert got["per_class_IoU"]["c4"] == 0.0
    for key in ("mIoU", "mean_accuracy", "pixel_accuracy"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_predicted_class_absent_from_ground_truth_counts_as_zero():
    target = torch.tensor([[0, 0], [1, 255]])
    prediction = torch.tensor([[0, 2], [1, 2]])
    r = segmentation_metrics(_matrix(target, prediction, 3))
    assert r["per_class_IoU"] == {"0": 50.0, "1": 100.0, "2": 0.0}
    assert r["mIoU"] == pytest.approx(50.0)
    assert r["pixel_accuracy"] == pytest.approx(200 / 3)
    assert r["per_class_accuracy"]["2"] is None and r["mean_accuracy"] == pytest.approx(75.0)


def test_bad_labels_are_errors():
    m = ConfusionMatrix(3, 255)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([0, 1]), torch.tensor([0]))


def test_empty_matrix_has_no_metrics():
    r = segmentation_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert r["mIoU"] is None and r["pixel_accuracy"] is None


def _matrix(target, prediction, n):
    m = ConfusionMatrix(n, 255)
    m.update(target, prediction)
    return m.matrix
