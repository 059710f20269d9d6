"""Images whose every annotation was dropped (an export's ``[x, y, null, null]`` boxes) are left out of
training and evaluation, counted, not taken for pictures of nothing; validation category names are
compared with training's per id; polygons outside their image are dropped and counted."""
import copy
import os

import pytest

from coco_fixtures import roboflow_style, write_json
from detection.annotations import clean_coco
from detection.coco_dataset import CocoDetection
from detection.dataset_check import check_dataset
from detection.evaluation import BACKENDS, evaluate_results_file
from detection.synthetic import make_shapes_dataset
from engine.data import DataError


@pytest.fixture(scope="module")
def fruit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fruit")
    files = make_shapes_dataset(str(out), num_train=6, num_val=6, size=64, seed=7)
    data = roboflow_style(files["val"][0], str(out / "val.json"), null_boxes=0)
    return {"data": data, "images": files["val"][1], "out": out}


def _with_null_only_images(data: dict, k: int) -> dict:
    """``data`` with ``k`` more images (copies of existing files) whose only boxes are null, and one
    image without any annotation."""
    grown = copy.deepcopy(data)
    next_image, next_ann = max(i["id"] for i in data["images"]) + 1, max(a["id"] for a in data["annotations"]) + 1
    for j in range(k + 1):
        grown["images"].append(dict(data["images"][j], id=next_image + j))
        if j < k:  # the last one has no annotation in the file: a background image, it stays
            for _ in range(2):
                grown["annotations"].append({"id": next_ann, "image_id": next_image + j, "category_id": 1,
                                             "bbox": [3, 4, None, None], "area": 0, "iscrowd": 0, "segmentation": []})
                next_ann += 1
    return grown


def _results(data: dict, extra_images) -> list:
    """The ground truth as detections (some shifted, so that AP is not 100), plus false positives on
    ``extra_images``."""
    out = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.5 + 0.01 * (a["id"] % 40),
            "bbox": [a["bbox"][0] + (a["id"] % 3), a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
           for a in data["annotations"] if None not in a["bbox"]]
    out += [{"image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.99} for i in extra_images]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_ap_unchanged_by_images_whose_boxes_were_all_dropped(fruit, tmp_path, backend):
    base = fruit["data"]
    grown = _with_null_only_images(base, 3)
    added = [i["id"] for i in grown["images"][len(base["images"]):]]
    background = added[-1]
    base_path = write_json(base, str(tmp_path / "base.json"))
    grown_path = write_json(grown, str(tmp_path / "grown.json"))
    # detections on the left-out images are set aside with a warning; the background image keeps its false positive
    ap_base = evaluate_results_file(base_path, write_json(_results(base, []), str(tmp_path / "rb.json")), "bbox", backend)
    ap_grown = evaluate_results_file(grown_path, write_json(_results(grown, added[:-1]), str(tmp_path / "rg.json")),
                                     "bbox", backend)
    assert 0 < ap_base["bbox"]["AP"] < 100 and repr(ap_grown["bbox"]) == repr(ap_base["bbox"])  # NaNs included
    with_background_fp = evaluate_results_file(
        grown_path, write_json(_results(grown, [background]), str(tmp_path / "rfp.json")), "bbox", backend)
    assert with_background_fp["bbox"]["AP"] < ap_base["bbox"]["AP"]  # the image without annotations still counts


def test_left_out_of_training_counted_and_reported(fruit, tmp_path):
    grown = _with_null_only_images(fruit["data"], 3)
    path = write_json(grown, str(tmp_path / "grown.json"))
    cleaning = clean_coco(copy.deepcopy(grown), path)
    assert cleaning.counts["no_usable_annotation"] == 3 and cleaning.counts["malformed_bbox"] == 6
    ds = CocoDetection(path, fruit["images"], keep_empty=True)
    assert len(ds) == len(fruit["data"]["images"]) + 1  # the three left out, the background image kept
    assert ds.stats["no_usable_annotation"] == 3 and len(ds.cleaning.left_out_images) == 3
    assert set(ds.cleaning.left_out_images).isdisjoint(ds.image_ids())
    assert "dropped: 6 malformed_bbox, 3 no_usable_annotation" in ds.cleaning.summary()
    report = check_dataset(path, fruit["images"], check_files=False).format()
    assert "no_usable_annotation (3): 3 images left with no usable annotation" in report
    assert "2 malformed_bbox" in report  # each example names the image, its file and why


def test_polygons_outside_the_image_are_dropped_and_counted(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100,
                             "segmentation": [[2, 2, 12, 2, 12, 12], [100, 100, 120, 100, 120, 120]]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100,
                             "segmentation": [[-50, 2, -40, 2, -40, 12]]}]}
    cleaning = clean_coco(data, "x.json")
    assert cleaning.counts["polygon_outside_image"] == 2 and cleaning.num_annotations == 2
    kept = {a["id"]: a["segmentation"] for a in cleaning.data["annotations"]}
    assert kept == {1: [[2, 2, 12, 2, 12, 12]], 2: []}
    assert "polygon [100, 100, 120, 100, 120, 120] lies outside the 40x30" in cleaning.examples["polygon_outside_image"][0]
    # a non-finite coordinate (the standard library reads NaN) is a bad polygon, checked in the same pass
    data["annotations"][0]["segmentation"] = [[2, 2, 12, 2, 12, float("nan")], [2, 2, 12, 2, 12, 12]]
    cleaning = clean_coco(data, "x.json")
    assert cleaning.counts["bad_polygon"] == 1 and cleaning.data["annotations"][0]["segmentation"] == [[2, 2, 12, 2, 12, 12]]


def test_renamed_validation_category_stops_unless_ids_rule(fruit, tmp_path, caplog):
    from detection.config import DetConfig
    from detection.task import DetectionTask
    from engine.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    train = write_json(fruit["data"], str(tmp_path / "train.json"))
    renamed = copy.deepcopy(fruit["data"])
    old = renamed["categories"][1]["name"]
    renamed["categories"][1]["name"] = "pear"
    val = write_json(renamed, str(tmp_path / "val.json"))

    def task(*extra):
        overrides = [f"data.train.0.json={train}", f"data.train.0.images={fruit['images']}",
                     f"data.val.0.json={val}", f"data.val.0.images={fruit['images']}", "model.mask=false",
                     "data.num_workers=0", "model.num_classes=auto", f"output_dir={tmp_path / 'run'}", *extra]
        return DetectionTask(load_config(DetConfig, os.path.join(root, "configs", "demo", "shapes_mask_rcnn.yaml"),
                                         overrides))

    cat_id = renamed["categories"][1]["id"]
    with pytest.raises(DataError, match=rf"data.val\[0\] .*val.json: category id {cat_id} is 'pear' there but "
                                        rf"'{old}' in .*train.json; give both files the same names, or set "
                                        r"data.categories_by_id=true"):
        task().train_dataset()
    task("data.categories_by_id=true").train_dataset()
    assert f"category id {cat_id} is 'pear' there but '{old}'" in caplog.text
