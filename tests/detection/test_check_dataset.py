"""check_dataset finds every planted problem, and says a clean dataset is clean."""
import os
import sys

import numpy as np
import pytest

from coco_fixtures import corrupt_jpeg, rect_polygon, write_image, write_json
from detection.dataset_check import PROBLEMS, check_dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import check_dataset as check_dataset_tool  # noqa: E402  (main() in-process: no second torch import)


def clean_dataset(root):
    images = [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(4)]
    for img in images:
        write_image(os.path.join(root, "images", img["file_name"]), np.zeros((30, 40, 3), np.uint8))
    anns = [{"id": i + 1, "image_id": i, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": rect_polygon(2, 3, 12, 11)} for i in range(4)]
    return {"images": images, "annotations": anns, "categories": [{"id": 5, "name": "thing"}]}


def ann(i, image_id=0, **kw):
    base = {"id": i, "image_id": image_id, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0}
    base.update(kw)
    return base


def test_clean_dataset_passes(tmp_path, capsys):
    data = clean_dataset(str(tmp_path))
    path = write_json(data, str(tmp_path / "ann.json"))
    report = check_dataset(path, str(tmp_path / "images"))
    assert not report.counts and not report.has_errors
    assert check_dataset_tool.main(["--json", path, "--images", str(tmp_path / "images")]) == 0
    assert "0 error(s), 0 dropped, 0 repaired, 0 warning(s) - the dataset is usable" in capsys.readouterr().out


def test_every_planted_problem_is_found(tmp_path, capsys):
    root = str(tmp_path)
    data = clean_dataset(root)
    images_dir = os.path.join(root, "images")
    data["images"] += [
        {"id": 4, "file_name": "missing.png", "width": 40, "height": 30},
        {"id": 5, "file_name": "corrupt.png", "width": 40, "height": 30},
        {"id": 6, "file_name": "small.png", "width": 40, "height": 30},
        {"id": 6, "file_name": "dup.png", "width": 40, "height": 30},
        {"id": 7, "file_name": "0.png", "width": 40, "height": 30},
        {"id": 8, "width": 40, "height": 30},
    ]
    with open(os.path.join(images_dir, "corrupt.png"), "wb") as f:
        f.write(b"garbage")
    write_image(os.path.join(images_dir, "small.png"), np.zeros((20, 20, 3), np.uint8))
    data["categories"] += [{"id": 5, "name": "again"}, {"name": "no id"}]
    data["annotations"] += [
        ann(4),  # duplicate annotation id
        ann(10, image_id=99),
        ann(11, category_id=42),
        ann(12, bbox=[1, 1, 0, 5]),
        ann(13, bbox=[1, 1, float("nan"), 5]),
        ann(14, bbox=[1, 2, 3]),
        ann(15, bbox=[100, 2, 3, 3]),
        ann(16, bbox=[35, 2, 10, 3]),
        ann(17, segmentation=[]),
        ann(18, segmentation=[[1, 2, 3]]),
        ann(19, segmentation={"counts": "abc", "size": [10, 10]}),
        ann(20, iscrowd=2),
        {k: v for k, v in ann(21).items() if k != "area"},
        {"image_id": 0, "category_id": 5},
    ]
    path = write_json(data, os.path.join(root, "ann.json"))
    report = check_dataset(path, images_dir, max_examples=3)
    expected = {
        "missing_file": 1, "unreadable_file": 1, "size_mismatch": 1, "duplicate_image_id": 1,
        "duplicate_file_name": 1, "bad_image_record": 1, "duplicate_category_id": 1, "bad_category_record": 1,
        "duplicate_annotation_id": 1, "unknown_image_id": 1, "unknown_category_id": 1, "empty_bbox": 1,
        "malformed_bbox": 2, "bbox_outside_image": 1, "bbox_clipped": 1, "empty_segmentation": 1,
        "bad_polygon": 1, "bad_rle": 1, "bad_iscrowd": 1, "missing_area": 1, "bad_annotation_record": 1,
        "unusable": 1,  # 9 of 18 annotations dropped, over the default 0.25
    }
    assert dict(report.counts) == expected
    text = report.format()
    assert "missing.png" in text and "corrupt.png" in text and "small.png is 20x20" in text
    assert "annotation id 11 (image id 0): category_id 42" in text
    assert "9 of 18 annotations (50%) are unusable" in text
    for code in expected:
        assert code in text
    assert check_dataset_tool.main(["--json", path, "--images", images_dir]) == 1
    assert "ERROR" in capsys.readouterr().out


def test_warnings_alone_exit_zero(tmp_path):
    data = clean_dataset(str(tmp_path))
    data["annotations"].append(ann(9, bbox=[35, 2, 10, 3]))
    path = write_json(data, str(tmp_path / "ann.json"))
    report = check_dataset(path, str(tmp_path / "images"))
    assert dict(report.counts) == {"bbox_clipped": 1} and not report.has_errors
    assert PROBLEMS["bbox_clipped"][0] == "warning"


def test_annotation_tool_export(tmp_path, capsys):
    """Placeholder category 0, ids from 0, null boxes, box-only annotations: every quirk named, the
    empty segmentations in one line, exit 0 (the dropped boxes are under the fraction)."""
    data = clean_dataset(str(tmp_path))
    data["categories"] = [{"id": 0, "name": "pieces", "supercategory": "none"},
                          {"id": 5, "name": "thing", "supercategory": "pieces"}]
    for i, a in enumerate(data["annotations"]):
        a.update(id=i, segmentation=[])
    data["annotations"] += [ann(4, bbox=[3, 4, None, None], segmentation=[]),
                            ann(5, image_id=1, iscrowd=1, segmentation=rect_polygon(1, 1, 9, 9))]
    data["annotations"] += [ann(6 + i, image_id=2, segmentation=[]) for i in range(10)]
    path = write_json(data, str(tmp_path / "export.json"))
    assert check_dataset_tool.main(["--json", path, "--images", str(tmp_path / "images")]) == 0
    out = capsys.readouterr().out
    assert "WARNING  unused_category (1)" in out and "category id 0 'pieces' (supercategory 'none')" in out
    assert "WARNING  annotation_id_zero (1)" in out and "annotation id 0 (image id 0)" in out
    assert "DROPPED  malformed_bbox (1)" in out and "annotation id 4 (image id 0): bbox [3, 4, None, None]" in out
    assert "NOTE     crowd (1)" in out
    examples = [line.strip() for line in out.splitlines() if line.startswith("    annotation id")]
    assert [line for line in out.splitlines() if "empty_segmentation" in line] == [
        "NOTE     empty_segmentation (14): " + PROBLEMS["empty_segmentation"][1]]
    assert examples == ["annotation id 4 (image id 0): bbox [3, 4, None, None]", "annotation id 0 (image id 0)"]
    assert "1 dropped" in out and "usable: training and evaluation leave out" in out


@pytest.mark.parametrize("threads", [1, 2])
def test_decoder_warnings_name_the_file(tmp_path, capfd, threads):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 48, "height": 48} for i in range(16)]
    for img in images[1:]:
        write_image(os.path.join(tmp_path, "images", img["file_name"]), np.zeros((48, 48, 3), np.uint8))
    corrupt_jpeg(os.path.join(tmp_path, "images", "0.jpg"))
    anns = [ann(i + 1, image_id=i) for i in range(16)]
    path = write_json({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "thing"}]},
                      str(tmp_path / "ann.json"))
    capfd.readouterr()
    report = check_dataset(path, str(tmp_path / "images"), num_threads=threads)
    assert report.counts["decoder_warning"] == 1 and not report.has_errors
    example = report.examples["decoder_warning"][0]
    assert example.startswith("image id 0: ") and "0.jpg: Corrupt JPEG data" in example, example
    assert "Corrupt JPEG" not in capfd.readouterr().err  # captured per file, not printed unnamed


def test_schema_problems(tmp_path):
    report = check_dataset(write_json({"images": {}, "categories": []}, str(tmp_path / "a.json")), str(tmp_path))
    assert report.counts["schema"] == 2 and report.has_errors
    with open(tmp_path / "b.json", "w") as f:
        f.write("{not json")
    assert check_dataset(str(tmp_path / "b.json"), str(tmp_path)).counts["invalid_json"] == 1
    assert check_dataset(str(tmp_path / "none.json"), str(tmp_path)).counts["invalid_json"] == 1


def test_category_names_shared_by_two_ids(tmp_path):
    data = clean_dataset(str(tmp_path))
    data["categories"].append({"id": 0, "name": "thing", "supercategory": "none"})
    report = check_dataset(write_json(data, str(tmp_path / "ann.json")), str(tmp_path / "images"))
    assert dict(report.counts) == {"duplicate_category_name": 1, "unused_category": 1} and not report.has_errors
    assert report.examples["duplicate_category_name"] == ["'thing': category ids [5, 0]"]


def test_area_unlike_the_polygon_is_noted(tmp_path):
    data = clean_dataset(str(tmp_path))
    for a in data["annotations"][:2]:
        a.update(bbox=[0, 0, 40, 30], segmentation=rect_polygon(0, 0, 40, 30))  # 1200 px, perimeter 140
    data["annotations"][0]["area"] = 1500  # off by more than 10% + half the perimeter (120 + 70)
    data["annotations"][1]["area"] = 1350  # within: a mask's pixel count differs that much on its edges
    report = check_dataset(write_json(data, str(tmp_path / "ann.json")), str(tmp_path / "images"))
    assert dict(report.counts) == {"area_not_polygon_area": 1} and not report.has_errors
