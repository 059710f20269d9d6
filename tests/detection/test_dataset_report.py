"""The dataset report: its statistics by hand, the images a problem names, and the page in a browser."""
import os
import re
import sys

import numpy as np

from coco_fixtures import rect_polygon, write_image, write_json
from detection.dataset_check import check_dataset
from detection.dataset_stats import affected_images, annotation_statistics, draw_annotations, sample_images, size_ranges

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import check_dataset as check_dataset_tool  # noqa: E402


def test_size_ranges_are_cocos():
    # COCO: small < 32^2 <= medium < 96^2 <= large
    assert size_ranges([0, 1023.9, 1024, 9215.5, 9216, 1e6]) == {"small": 2, "medium": 2, "large": 2}


def _ann(i, image_id, cat, w, h, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": [0, 0, w, h], "area": w * h, "iscrowd": crowd}


def test_statistics_by_hand():
    data = {"images": [{"id": k, "file_name": f"{k}.png", "width": 200, "height": 200} for k in range(4)],
            "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}, {"id": 9, "name": "unused"}],
            "annotations": [_ann(1, 0, 3, 10, 10), _ann(2, 0, 3, 40, 40), _ann(3, 1, 3, 100, 100),
                            _ann(4, 1, 7, 20, 80), _ann(5, 2, 7, 50, 50, crowd=1)]}
    stats = annotation_statistics(data)
    rows = {c["name"]: c for c in stats["classes"]}
    assert [c["id"] for c in stats["classes"]] == [3, 7, 9]  # category-id order
    assert {k: rows["a"][k] for k in ("instances", "images", "crowd", "small", "medium", "large")} == \
        {"instances": 3, "images": 2, "crowd": 0, "small": 1, "medium": 1, "large": 1}
    assert {k: rows["b"][k] for k in ("instances", "images", "crowd", "medium")} == \
        {"instances": 1, "images": 1, "crowd": 1, "medium": 1}  # the crowd region is not an instance
    assert rows["unused"]["instances"] == 0 and rows["unused"]["images"] == 0
    assert stats["sizes"] == {"small": 1, "medium": 2, "large": 1}
    np.testing.assert_array_equal(stats["per_image"], [2, 2, 0, 0])  # crowd not counted: image 2 is empty
    assert stats["empty_images"] == 2
    np.testing.assert_allclose(stats["widths"] / stats["heights"], [1, 1, 1, 0.25])


def test_sample_shows_the_rarest_class_first():
    data = {"images": [{"id": k} for k in range(10)], "categories": [],
            "annotations": [{"image_id": k, "category_id": 1} for k in range(9)] + [{"image_id": 9, "category_id": 2}]}
    assert 9 in sample_images(data, 2)  # the only image of class 2
    # class 2's image, then class 1's first, then the rest spread evenly: id order
    assert sample_images(data, 4) == [0, 1, 8, 9]
    assert len(sample_images(data, 50)) == 10 and sample_images(data, 0) == []


def test_affected_images_from_the_examples():
    data = {"images": [{"id": 3, "file_name": "x.png"}, {"id": 4, "file_name": "x.png"}], "annotations": []}
    hits = affected_images("bbox_clipped", ["annotation id 12 (image id 3): bbox [0, 1, 50, 20.5], image 4x4 (w x h)",
                                            "annotation id 13 (image id 99): bbox [0, 0, 1, 1]"], data)
    assert hits == [{"image_id": 3, "annotation_id": 12, "bbox": [0.0, 1.0, 50.0, 20.5],
                     "text": "annotation id 12 (image id 3): bbox [0, 1, 50, 20.5], image 4x4 (w x h)"}]
    dup = affected_images("duplicate_file_name", ["x.png: 2 image records"], data)
    assert [h["image_id"] for h in dup] == [3, 4]


def test_drawing_marks_the_named_annotation():
    image = np.zeros((100, 200, 3), np.uint8)
    anns = [{"id": 1, "category_id": 5, "bbox": [10, 10, 50, 40], "segmentation": rect_polygon(10, 10, 60, 50)}]
    anns.append({"id": 2, "category_id": 5, "bbox": [100, 10, 50, 40]})
    drawn = draw_annotations(image, anns, {5: "thing"}, max_side=100, highlight={1})
    assert drawn.shape == (50, 100, 3)  # drawn on the thumbnail
    red = (drawn == (255, 0, 0)).all(axis=2)
    assert red[5:26, 4:7].any() and not red[:, 49:76].any()  # the named box in red at half scale, the other not
    plain = draw_annotations(image, anns, {5: "thing"}, max_side=100, extra_boxes=[[150, 80, 20, 10]])
    assert not (plain[5:26, 4:7] == (255, 0, 0)).all(axis=2).any()  # nothing named: class colours
    assert (plain[40:46, 75] == (255, 0, 0)).all(axis=1).any()  # a dropped annotation's box, in red


def _dataset(root):
    images_dir = os.path.join(root, "images")
    rng = np.random.default_rng(0)
    images = [{"id": k, "file_name": f"{k}.png", "width": 120, "height": 90} for k in range(6)]
    for img in images:
        write_image(os.path.join(images_dir, img["file_name"]), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    anns = []
    for k in range(6):
        anns.append({"id": len(anns) + 1, "image_id": k, "category_id": 1 + k % 2, "bbox": [10, 10, 40, 30],
                     "area": 1200, "iscrowd": 0, "segmentation": rect_polygon(10, 10, 50, 40)})
    anns.append({"id": 50, "image_id": 2, "category_id": 1, "bbox": [100, 60, 40, 40], "area": 1600, "iscrowd": 0,
                 "segmentation": rect_polygon(100, 60, 120, 90)})  # clipped: reaches past the right edge
    anns.append({"id": 51, "image_id": 3, "category_id": 2, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0})  # dropped
    images.append({"id": 6, "file_name": "missing.png", "width": 120, "height": 90})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "never"}]}
    return write_json(data, os.path.join(root, "ann.json")), images_dir


SECTIONS = ["Summary", "Classes", "Object sizes and shapes", "Sample images", "Problems"]


def test_tool_writes_the_report(tmp_path, capsys):
    path, images_dir = _dataset(str(tmp_path))
    out = tmp_path / "report"
    assert check_dataset_tool.main(["--json", path, "--images", images_dir, "--report", str(out),
                                    "--report-samples", "3"]) == 1  # the missing file is an error
    printed = capsys.readouterr().out
    assert f"report: {out / 'index.html'}" in printed
    html = (out / "index.html").read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html
    for code in ("missing_file", "empty_bbox", "bbox_clipped", "unused_category"):
        assert f"{code} (1)" in html or f">{code}<" in html
    assert "small (area &lt; 1024) 0" in html and "medium 7" in html
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", html)
    assert sum(bool(re.search(r"\(\d+ annotations?\)$", c)) for c in captions) == 3  # the samples
    # the images the problems name: the clipped box's and the dropped box's (the missing file has none)
    assert "image id 2: annotation 50 (2.png)" in captions and "image id 3: annotation 51 (3.png)" in captions
    names = re.findall(r'<img src="([^"]+)"', html)
    assert all(os.path.isfile(out / n) for n in names)


def test_report_of_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    from detection.dataset_report import write_dataset_report

    html = open(write_dataset_report(check_dataset(str(bad), str(tmp_path)), str(tmp_path), str(tmp_path / "r"))).read()
    assert "invalid_json" in html and "nothing to count" in html


def test_dataset_report_in_a_browser(tmp_path):
    from tests.report_browser import check_report

    path, images_dir = _dataset(str(tmp_path))
    out = str(tmp_path / "report")
    check_dataset_tool.main(["--json", path, "--images", images_dir, "--report", out, "--report-samples", "4"])
    page = check_report(os.path.join(out, "index.html"), SECTIONS)
    assert len(page.images) >= 3 + 4 + 2  # three figures, the samples, the problems' images
