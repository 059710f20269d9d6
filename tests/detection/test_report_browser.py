"""The detection report of tools/eval_coco.py --report, rendered in headless Chromium: every section,
no console error, every image loaded, a screenshot that is not blank (tests/report_browser.py). A tiny
generated dataset and results file: no training."""
import json
import os
import re

import numpy as np
import pytest

from coco_fixtures import perturbed_results, random_gt, write_image, write_json
from detection.report import SECTIONS
from tests.report_browser import check_report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("report_data")
    gt = random_gt(0)
    for c, sup in zip(gt["categories"], ("round", "round", "pointy", "pointy")):
        c["supercategory"] = sup
    rng = np.random.default_rng(0)
    for im in gt["images"]:
        image = np.full((im["height"], im["width"], 3), 200, np.uint8)
        image[::7] = rng.integers(0, 255, 3)  # some texture, so that a blank page would show
        write_image(str(out / "images" / im["file_name"]), image)
    return {"gt": write_json(gt, str(out / "gt.json")), "images": str(out / "images"),
            "results": write_json(perturbed_results(gt, 1), str(out / "results.json")), "dir": out}


def _eval(argv):
    from tools.eval_coco import main
    assert main(argv) == 0


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_results_file_report_in_a_browser(dataset, tmp_path, iou_type, capsys):
    out = str(tmp_path / "report")
    _eval(["--gt", dataset["gt"], "--results", dataset["results"], "--iou-type", iou_type,
           "--output", str(tmp_path / "metrics.json"), "--report", out, "--images", dataset["images"]])
    assert f"report written to {os.path.join(out, 'index.html')}" in capsys.readouterr().out
    page = check_report(os.path.join(out, "index.html"), [*SECTIONS, "Inputs"])
    # per-class table: one row per category, sortable; the gallery: the images with errors, and its legend
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    for name in ("circle", "square", "triangle", "unused"):
        assert f"<td>{name}</td>" in html
    assert html.count('class="sortable"') >= 2
    for legend in ("true positive", "false positive", "wrong class", "missed", "ground truth"):
        assert legend in page.text
    # segm results: the gallery draws their masks (detections filled); bbox results: boxes
    assert ("detections filled" if iou_type == "segm" else "detections thick") in page.text
    assert "ground truth \\ detected as" in page.text  # the confusion matrix: engine.confusion's table
    gallery = re.findall(r'<div class="gallery">(.*?)</div>', html)[0]
    assert gallery.count("<img") == 9
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    # the report's numbers are the evaluation's: the per-class AP column equals results.json's table
    for name, ap in metrics[f"{iou_type}_per_category"].items():
        if ap is not None:
            assert re.search(rf"<td>{name}</td><td data-v=\"([^\"]+)\"", html).group(1) == repr(ap)


def test_report_without_images_says_so(dataset, tmp_path):
    out = str(tmp_path / "report")
    _eval(["--gt", dataset["gt"], "--results", dataset["results"], "--output", str(tmp_path / "m.json"),
           "--report", out])
    page = check_report(os.path.join(out, "index.html"), SECTIONS)
    assert "no image folder given (tools/eval_coco.py --images DIR)" in page.text
