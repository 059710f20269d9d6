"""engine.report: the static page, its tables and images, the size bound; engine.report_run."""
import json
import os
import re

import numpy as np

from engine.report import Report, figure
from engine.report_run import add_run_section


def _images(html):
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_writes_one_offline_folder(tmp_path):
    report = Report(str(tmp_path / "r"), "a <title>", subtitle="sub")
    report.section("numbers").table(["class", "AP", "n"], [["a&b", 41.25, 3], ["c", float("nan"), 0]])
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    ax.set_title("a falling line")
    report.image(fig, "a curve")
    rng = np.random.default_rng(0)
    report.section("pictures").gallery([(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8), "big photo"),
                                        (rng.integers(0, 255, (40, 30), dtype=np.uint8), "gray")])
    path = report.write()
    html = open(path, encoding="utf-8").read()
    # nothing fetched: no http(s) reference at all, scripts and styles inline
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert "a &lt;title&gt;" in html and "a&amp;b" in html  # escaped
    assert 'data-v="41.25">41.2' in html or 'data-v="41.25">41.3' in html
    assert 'data-v="NaN">n/a' in html
    assert 'class="sortable"' in html
    names = _images(html)
    assert len(names) == 3 and all(os.path.isfile(tmp_path / "r" / n) for n in names)
    svg = open(tmp_path / "r" / names[0], encoding="utf-8").read()  # a figure: SVG, its text as text
    assert names[0].endswith(".svg") and "a falling line" in svg
    import cv2
    big = cv2.imread(str(tmp_path / "r" / names[1]))
    assert max(big.shape[:2]) == 480  # a gallery photograph becomes a thumbnail
    assert ['id="numbers"', 'id="pictures"'] == re.findall(r'id="(?:numbers|pictures)"', html)


def test_size_limit_leaves_images_out_with_a_note(tmp_path):
    report = Report(str(tmp_path / "r"), "t", max_mb=0.05, limit_hint="--report-max-mb")
    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)  # ~100 kB as JPEG
    for i in range(3):
        report.image(noise, f"noise {i}")
    html = open(report.write(), encoding="utf-8").read()
    assert report.images_left_out == 3 and _images(html) == []
    assert html.count("size limit of 0.05 MB (--report-max-mb)") == 3
    total = sum(os.path.getsize(os.path.join(tmp_path / "r" / "images", f))
                for f in os.listdir(tmp_path / "r" / "images"))
    assert total <= 0.05 * 2 ** 20


def test_rewrite_removes_stale_images(tmp_path):
    first = Report(str(tmp_path / "r"), "t")
    first.image(np.zeros((8, 8, 3), np.uint8), "old")
    first.write()
    second = Report(str(tmp_path / "r"), "t")
    second.image(np.zeros((8, 8, 3), np.uint8), "new")
    second.write()
    assert os.listdir(tmp_path / "r" / "images") == ["001-new.jpg"]


def test_run_section_reads_the_output_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 3\n")
    (run / "hardware.json").write_text(json.dumps({"device": "CPU", "precision": "fp32",
                                                   "precision_reason": "AVX2 has no native bf16"}))
    with open(run / "metrics.jsonl", "w") as f:
        for i in (1, 2):
            f.write(json.dumps({"iter": i, "lr": 0.1, "loss": 1.0 / i, "loss_cls": 0.5 / i}) + "\n")
        f.write(json.dumps({"iter": 2, "eval": {"bbox": {"AP": 12.5}}}) + "\n")
    report = Report(str(tmp_path / "r"), "t")
    add_run_section(report, str(run), notes=[("validation set", "3 images; dropped: crowd 1")])
    html = open(report.write(), encoding="utf-8").read()
    for expected in ("precision: fp32 (AVX2 has no native bf16)", "dropped: crowd 1", "seed: 3",
                     "2 logged training steps up to iteration 2, 1 evaluations"):
        assert expected in html
    assert len(_images(html)) == 1


def test_report_in_a_browser_sorts_and_loads_everything(tmp_path):
    from tests.report_browser import check_report, render

    report = Report(str(tmp_path / "r"), "t")
    report.section("numbers").table(["class", "AP"], [["a", 2.0], ["b", float("nan")], ["c", 10.0]])
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    report.image(fig, "curve")
    path = report.write()
    page = check_report(path, ["numbers"])
    assert len(page.images) == 1
    # the page's own script sorts by a click on a header: numbers numerically, n/a last
    sorted_page = render(path, script='document.querySelectorAll("th")[1].click()')
    assert "n/a" in sorted_page.text and not sorted_page.console_errors
    order = [line.split("\t")[0] for line in sorted_page.text.splitlines() if line.split("\t")[0] in ("a", "b", "c")]
    assert order == ["a", "c", "b"], order


def test_browser_check_catches_a_missing_image_and_a_script_error(tmp_path):
    """check_report must fail on what a person would see as broken (so the report tests can fail)."""
    import pytest

    from tests.report_browser import check_report

    report = Report(str(tmp_path / "r"), "t")
    report.section("numbers").table(["a"], [[1.0]])
    report.html('<img src="images/missing.png" alt="gone"><script>undefined_function()</script>')
    with pytest.raises(AssertionError, match="console errors|images that did not load") as err:
        check_report(report.write(), ["numbers"])
    assert "missing.png" in str(err.value) or "undefined_function" in str(err.value)
