"""The semantic segmentation report: per-image mIoU by hand, the worst images kept and merged in order,
and the page in headless Chromium."""
import os

import numpy as np
import pytest
import torch

from engine.confusion import confusion_matrix
from engine.report import Report
from segmentation.metrics import segmentation_metrics
from segmentation.report import WorstImages, add_semantic_report, image_miou


def test_image_miou_by_hand():
    # truth: 3 pixels of class 0, 1 of class 1; prediction: all class 0.
    m = confusion_matrix([0, 0, 0, 1], [0, 0, 0, 0], 3)
    # class 0: IoU 3/4; class 1: 0/1; class 2 absent from both: left out
    assert image_miou(m) == pytest.approx(100 * (0.75 + 0.0) / 2)
    assert image_miou(np.zeros((3, 3))) is None
    # a class predicted but not in the truth counts, with IoU 0
    m2 = confusion_matrix([0, 0, 0, 1], [0, 0, 2, 1], 3)
    assert image_miou(m2) == pytest.approx(100 * (2 / 3 + 1 + 0) / 3)
    # the same as the dataset mIoU of a one-image set
    assert image_miou(m) == pytest.approx(segmentation_metrics(torch.as_tensor(m))["mIoU"])


def _image(k, size=16):
    target = np.zeros((size, size), np.uint8)
    target[: k + 1] = 1
    return np.full((3, size, size), 10 * k, np.uint8), target


def test_worst_images_kept_and_merged_in_order():
    rank0, rank1 = WorstImages(k=2), WorstImages(k=2)
    scores = {}
    for k in range(6):
        image, target = _image(k)
        prediction = np.zeros_like(target)  # misses class 1: the fewer class-1 rows, the better
        m = confusion_matrix(target, prediction, 2)
        worst = rank0 if k % 2 == 0 else rank1
        scores[k] = worst.add(m, torch.from_numpy(image), target, prediction)
    assert scores[5] < scores[4] < scores[0]
    kept0 = sorted(r["miou"] for r in rank0.state()["worst"])
    assert kept0 == sorted([scores[4], scores[2]])  # the 2 lowest of images 0, 2, 4
    merged = WorstImages.merge([rank0.state(), rank1.state()], 3)
    assert [r["miou"] for r in merged["worst"]] == [scores[5], scores[4], scores[3]]  # worst first
    assert merged["worst"][0]["image"].shape == (16, 16, 3) and merged["worst"][0]["image"][0, 0, 0] == 50
    assert len(merged["scores"]) == 6
    # ties: the image seen first is kept
    tie = WorstImages(k=1)
    image, target = _image(0)
    m = confusion_matrix(target, np.zeros_like(target), 2)
    tie.add(m, image, target, np.zeros_like(target))
    tie.add(m, image + 1, target, np.zeros_like(target))
    assert tie.state()["worst"][0]["order"] == 0
    none = WorstImages(k=0)  # the report is off: scores only, no copies
    none.add(m, image, target, np.zeros_like(target))
    assert none.state() == {"scores": [pytest.approx(scores[0])], "worst": []}


def _semantic_report(directory):
    rng = np.random.default_rng(0)
    names = ["background", "circle", "square"]
    worst = WorstImages(k=3)
    total = np.zeros((3, 3), np.int64)
    for k in range(5):
        target = np.zeros((48, 64), np.uint8)
        target[10:30, 10:30] = 1
        target[5:20, 40:60] = 2
        target[0:2] = 255  # ignored
        prediction = target.copy()
        prediction[target == 255] = 0
        prediction[10:30, 10:10 + 4 * k] = 2
        valid = target != 255
        m = confusion_matrix(target[valid], prediction[valid], 3)
        total += m
        worst.add(m, rng.integers(0, 255, (3, 48, 64), dtype=np.uint8), target, prediction)
    results = segmentation_metrics(torch.as_tensor(total), names)
    report = Report(directory, "semantic")
    add_semantic_report(report, results, total, names, WorstImages.merge([worst.state()], 3))
    return report.write(), results


def test_semantic_report_page(tmp_path):
    path, results = _semantic_report(str(tmp_path / "r"))
    html = open(path, encoding="utf-8").read()
    for section in ("Semantic segmentation", "Confusion matrix", "Worst images"):
        assert f"<h2>{section}</h2>" in html
    assert html.count('<img src="images/') == 3 and 'class="confusion"' in html
    assert f">{results['mIoU']:.1f}<" in html


def test_semantic_report_in_a_browser(tmp_path):
    from tests.report_browser import check_report

    path, _ = _semantic_report(str(tmp_path / "r"))
    page = check_report(path, ["Semantic segmentation", "Confusion matrix", "Worst images"])
    assert len(page.images) == 3


def test_labels_past_255_are_kept_exactly(tmp_path):
    target = np.full((8, 8), 300, np.int64)
    prediction = np.full((8, 8), 2, np.int64)
    m = np.zeros((301, 301), np.int64)
    m[300, 2] = 64
    worst = WorstImages(k=1)
    worst.add(m, np.zeros((8, 8, 3), np.uint8), target, prediction)
    kept = worst.state()["worst"][0]
    assert kept["target"].dtype == np.uint16 and int(kept["target"].max()) == 300
    names = [f"c{i}" for i in range(301)]
    report = Report(str(tmp_path / "r"), "t")
    results = segmentation_metrics(torch.as_tensor(m), names)
    add_semantic_report(report, results, m, names, WorstImages.merge([worst.state()], 1))
    assert os.path.isfile(report.write())
