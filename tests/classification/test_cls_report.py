"""The classification report: records and the most confident mistakes in order, the page in Chromium."""
import numpy as np
import pytest
import torch

from classification.report import ClassificationRecords, add_classification_report, view_image
from engine.report import Report


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_most_confident_mistakes_in_order():
    images = torch.rand(5, 3, 8, 8)
    rank0, rank1 = ClassificationRecords(k=2), ClassificationRecords(k=2)
    # rank 0: right (0.9), wrong 0.6, wrong 0.8, wrong 0.7 -> keeps 0.8 and 0.7
    rank0.add(_probs([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]]), torch.tensor([0, 0, 0, 0]), images)
    # rank 1: wrong 0.75, and a tie with it
    rank1.add(_probs([[0.25, 0.75], [0.75, 0.25]]), torch.tensor([0, 1]), images)
    assert sorted(r["confidence"] for r in rank0.state()["mistakes"]) == pytest.approx([0.7, 0.8])
    merged = ClassificationRecords.merge([rank0.state(), rank1.state()], 3)
    got = [(r["rank"], r["order"], round(r["confidence"], 2)) for r in merged["mistakes"]]
    assert got == [(0, 2, 0.8), (1, 0, 0.75), (1, 1, 0.75)]  # most confident first; ties in rank order
    assert merged["labels"] == [0, 0, 0, 0, 0, 1] and merged["predictions"] == [0, 1, 1, 1, 1, 0]
    first = merged["mistakes"][0]
    assert first["true_probability"] == pytest.approx(0.2) and first["image"].shape == (8, 8, 3)


def test_view_image_of_each_evaluation_view():
    crop = torch.zeros(3, 6, 4)
    crop[0] = 1.0
    assert view_image(crop)[0, 0].tolist() == [255, 0, 0]
    ten = torch.zeros(10, 3, 4, 4)
    ten[4] = 1.0  # torchvision's ten_crop: the centre crop is the fifth
    assert view_image(ten).min() == 255
    assert view_image([torch.ones(3, 5, 5), torch.zeros(3, 9, 9)]).shape == (5, 5, 3)  # multi-scale: the first


def _report(directory, n_classes=3):
    rng = np.random.default_rng(0)
    records = ClassificationRecords(k=4)
    labels = torch.arange(30) % n_classes
    logits = torch.from_numpy(rng.normal(size=(30, n_classes))).float()
    logits[torch.arange(30), labels] += 1.5
    records.add(logits.softmax(1), labels, torch.rand(30, 3, 32, 32))
    merged = ClassificationRecords.merge([records.state()], 4)
    report = Report(directory, "classification")
    names = [f"class {i}" for i in range(n_classes)]
    add_classification_report(report, {"top1": 50.0, "top5": 100.0, "view": "center"}, merged, names)
    return report.write(), merged


def test_classification_report_page(tmp_path):
    path, merged = _report(str(tmp_path / "r"))
    html = open(path, encoding="utf-8").read()
    for section in ("Classification", "Confusion matrix", "Most confident mistakes"):
        assert f"<h2>{section}</h2>" in html
    assert html.count('<img src="images/') == len(merged["mistakes"]) == 4
    labels, predictions = np.array(merged["labels"]), np.array(merged["predictions"])
    accuracy0 = float(100 * np.mean(predictions[labels == 0] == 0))
    assert f'data-v="{accuracy0!r}"' in html  # the per-class accuracy of class 0


def test_classification_report_in_a_browser(tmp_path):
    from tests.report_browser import check_report

    path, _ = _report(str(tmp_path / "r"))
    page = check_report(path, ["Classification", "Confusion matrix", "Most confident mistakes"])
    assert len(page.images) == 4
