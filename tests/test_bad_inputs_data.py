"""Bad-input corpus, part 3: data. Annotation files, images, validation sets, results files and the
inputs of predict / plot_metrics / train_cls. Each case: the exit code and one line naming the file,
record or key; or, for what a run can go on without, a counted drop in the tool's output."""
import copy
import json
import os

import cv2
import numpy as np
import pytest

from bad_inputs_support import CLS_CONFIG, DET_CONFIG, det_overrides, expect_error, record, run, write_json

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from detection.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("data")
    splits = make_shapes_dataset(str(root / "shapes"), num_train=4, num_val=2, size=64, seed=0)
    with open(splits["train"][0]) as f:
        train = json.load(f)
    with open(splits["val"][0]) as f:
        val = json.load(f)
    return {"root": root, "train": splits["train"], "val": splits["val"], "train_json": train, "val_json": val}


def _variant(shapes, name, mutate, split="train_json"):
    data = copy.deepcopy(shapes[split])
    mutate(data)
    return write_json(shapes["root"] / f"{name}.json", data)


def _train_det(capsys, shapes, name, *extra, train_json=None):
    values = {"data.train.0.json": train_json} if train_json else {}
    return run(capsys, "train_det", "--config", DET_CONFIG,
               *det_overrides(shapes, shapes["root"] / f"run_{name}", **values), *extra)


# ------------------------------------------------------------------------------ annotation files

def test_annotation_file_missing(capsys, shapes):
    missing = str(shapes["root"] / "nope.json")
    expect_error(_train_det(capsys, shapes, "missing", train_json=missing), 1, missing, "not found",
                 case="train_det data.train json missing")


def test_annotation_file_not_json(capsys, shapes):
    bad = shapes["root"] / "notjson.json"
    bad.write_text("{not json")
    expect_error(_train_det(capsys, shapes, "notjson", train_json=str(bad)), 1, str(bad), "not valid JSON",
                 case="train_det annotation file that is not JSON")


def test_no_annotations_key(capsys, shapes):
    path = _variant(shapes, "noann", lambda d: d.pop("annotations"))
    expect_error(_train_det(capsys, shapes, "noann", train_json=path), 1, path, "no 'annotations' key",
                 case="train_det json without 'annotations'")


def test_every_box_null(capsys, shapes):
    def null_boxes(d):
        for a in d["annotations"]:
            a["bbox"] = [a["bbox"][0], a["bbox"][1], None, None]
    path = _variant(shapes, "nullboxes", null_boxes)
    expect_error(_train_det(capsys, shapes, "nullboxes", train_json=path), 1, path, "none of its",
                 "malformed_bbox", "annotation id 1", case="train_det every box [x, y, null, null]")


def test_string_image_ids(capsys, shapes):
    def string_ids(d):
        for im in d["images"]:
            im["id"] = f"img{im['id']}"
        for a in d["annotations"]:
            a["image_id"] = f"img{a['image_id']}"
    path = _variant(shapes, "strids", string_ids)
    expect_error(_train_det(capsys, shapes, "strids", train_json=path), 1, path, "'img0'",
                 case="train_det string image ids")


def test_num_classes_that_does_not_match_the_data(capsys, shapes):
    expect_error(_train_det(capsys, shapes, "numcls", "model.num_classes=3"), 2, "model.num_classes", "6",
                 case="train_det model.num_classes differs from the data")


def test_training_image_file_missing(capsys, shapes):
    def missing_image(d):
        d["images"][0]["file_name"] = "not_there.png"
    path = _variant(shapes, "missimg", missing_image)
    expect_error(_train_det(capsys, shapes, "missimg", "data.keep_empty=true", train_json=path), 1,
                 "not_there.png", "image id 0", case="train_det image file missing")


@pytest.mark.parametrize("name, mutate, words", [
    ("corrupt RLE", lambda d: d["annotations"][0].update(segmentation={"counts": "!!garbage", "size": [64, 64]}),
     ["REPAIRED bad_rle (1)", "annotation id 1 (image id 0)"]),
    ("polygon of 2 points", lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
     ["REPAIRED bad_polygon (1)", "annotation id 1 (image id 0): polygon [1, 1, 5, 5]"]),
    ("duplicate annotation id", lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]),
     ["DROPPED  duplicate_annotation_id (1)", "annotation id 1 (annotations[1])"]),
    ("annotation id 0", lambda d: d["annotations"][0].update(id=0), ["annotation_id_zero (1)"]),
    ("placeholder category no annotation uses",
     lambda d: d["categories"].insert(0, {"id": 0, "name": "placeholder", "supercategory": "none"}),
     ["WARNING  unused_category (1)", "category id 0 'placeholder'"]),
    ("duplicate image record", lambda d: d["images"].append(dict(d["images"][0])),
     ["DROPPED  duplicate_image_id (1)", "image id 0 (images[4]"]),
])
def test_check_dataset_names_the_record(capsys, shapes, name, mutate, words):
    """What training drops and counts, check_dataset.py names, record by record."""
    path = _variant(shapes, name.replace(" ", "_"), mutate)
    result = run(capsys, "check_dataset", "--json", path, "--images", shapes["train"][1])
    assert "Traceback" not in result.err
    text = result.out + result.err
    for word in words:
        assert word in text, (word, text[-2000:])
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if words[0] in line)
    record(f"check_dataset: {name}", result.code, " / ".join(line.strip() for line in lines[at:at + 2]))


# -------------------------------------------------------------------------------- validation set

def test_validation_category_ids_unlike_training(capsys, shapes):
    def shift(d):
        for c in d["categories"]:
            c["id"] += 100
        for a in d["annotations"]:
            a["category_id"] += 100
    path = _variant(shapes, "valcats", shift, "val_json")
    expect_error(_train_det(capsys, shapes, "valcats", f"data.val.0.json={path}"), 1, path, "category ids",
                 case="train_det validation category ids differ from training")


def test_validation_image_missing(capsys, shapes):
    path = _variant(shapes, "valmiss", lambda d: d["images"][0].update(file_name="gone.png"), "val_json")
    expect_error(_train_det(capsys, shapes, "valmiss", f"data.val.0.json={path}"), 1, "gone.png", "data.val",
                 case="train_det validation image missing")


# --------------------------------------------------------------------------------- results files

def _results(shapes):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in shapes["val_json"]["annotations"]]


@pytest.mark.parametrize("name, make, words", [
    ("not JSON", lambda r: "[{", ["not valid JSON"]),
    ("a dict, not a list", lambda r: {"annotations": r}, ["JSON list"]),
    ("unknown image id", lambda r: r + [dict(r[0], image_id=999)], ["record", "999"]),
    ("record without score", lambda r: [{k: v for k, v in x.items() if k != "score"} for x in r],
     ["record 0", "'score'"]),
    ("null box", lambda r: [dict(x, bbox=[1, 2, None, None]) for x in r], ["record 0", "bbox"]),
])
def test_eval_coco_results_file(capsys, shapes, name, make, words):
    content = make(_results(shapes))
    path = shapes["root"] / f"results_{name.replace(' ', '_').replace(',', '')}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    # eval_coco.py's documented code for a bad --gt / --results file is 2
    expect_error(run(capsys, "eval_coco", "--gt", shapes["val"][0], "--results", str(path)), 2, str(path), *words,
                 case=f"eval_coco results file: {name}")


def test_eval_coco_ground_truth_missing(capsys, shapes):
    results = write_json(shapes["root"] / "results_ok.json", _results(shapes))
    missing = str(shapes["root"] / "nogt.json")
    expect_error(run(capsys, "eval_coco", "--gt", missing, "--results", results), 2, missing, "not found",
                 case="eval_coco ground truth missing")


def test_eval_coco_empty_results_is_said(capsys, shapes):
    results = write_json(shapes["root"] / "results_empty.json", [])
    result = run(capsys, "eval_coco", "--gt", shapes["val"][0], "--results", results)
    assert result.code == 0 and "Traceback" not in result.err
    line = next(line for line in (result.err + result.out).splitlines() if "empty" in line)
    assert results in line
    record("eval_coco empty results list (warning)", 0, line)


def test_eval_coco_segm_results_without_masks(capsys, shapes):
    results = write_json(shapes["root"] / "results_nomask.json", _results(shapes))
    expect_error(run(capsys, "eval_coco", "--gt", shapes["val"][0], "--results", results, "--iou-type", "segm"), 2,
                 results, "'segmentation'", case="eval_coco --iou-type segm on box results")


# ------------------------------------------------------------------------------- other tool inputs

def test_predict_input_missing(capsys, shapes):
    missing = str(shapes["root"] / "no_images_here")
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", "unused.pth", "--input", missing,
                     "--output", str(shapes["root"] / "pred")), 1, missing, case="predict --input missing")


def test_predict_folder_without_images(capsys, shapes):
    empty = shapes["root"] / "empty_folder"
    empty.mkdir(exist_ok=True)
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", "unused.pth", "--input", str(empty),
                     "--output", str(shapes["root"] / "pred")), 1, str(empty), "no images",
                 case="predict --input folder without images")


def test_plot_metrics_of_a_folder_that_is_no_run(capsys, shapes):
    folder = shapes["root"] / "not_a_run"
    folder.mkdir(exist_ok=True)
    expect_error(run(capsys, "plot_metrics", str(folder)), 1, "metrics.jsonl", case="plot_metrics of a folder that is no run")


@pytest.fixture(scope="module")
def image_folder(shapes):
    root = shapes["root"] / "folder"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    return root


def _train_cls(capsys, shapes, name, root, *extra):
    return run(capsys, "train_cls", "--config", CLS_CONFIG, f"output_dir={shapes['root'] / name}",
               "data.train.0.synthetic=null", f"data.train.0.root={root}", "data.val.0.synthetic=null",
               f"data.val.0.root={root}", "model.num_classes=2", "solver.max_iter=1", "solver.ims_per_batch=4",
               "data.num_workers=0", "solver.amp=off", *extra)


def test_classification_root_missing(capsys, shapes):
    missing = str(shapes["root"] / "no_folder")
    expect_error(_train_cls(capsys, shapes, "cls_missing", missing), 1, "data.train[0].root", missing,
                 case="train_cls data root missing")


def test_classification_empty_class_folder(capsys, shapes, image_folder):
    (image_folder / "c").mkdir(exist_ok=True)
    try:
        expect_error(_train_cls(capsys, shapes, "cls_empty", image_folder), 1, str(image_folder / "c"), "no images",
                     case="train_cls empty class folder")
    finally:
        (image_folder / "c").rmdir()


def test_classification_corrupt_image(capsys, shapes, image_folder):
    bad = image_folder / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    try:
        expect_error(_train_cls(capsys, shapes, "cls_corrupt", image_folder, "solver.ims_per_batch=3"), 1, str(bad),
                     "data.skip_bad", case="train_cls undecodable image")
    finally:
        bad.unlink()


def test_classification_num_classes(capsys, shapes, image_folder):
    expect_error(_train_cls(capsys, shapes, "cls_numcls", image_folder, "model.num_classes=5"), 2, "model.num_classes",
                 case="train_cls model.num_classes differs from the data")


@pytest.mark.parametrize("override, words", [
    ("model.rpn.anchor_sizes=[32]", ["model.rpn.anchor_sizes", "5 levels"]),
    ("model.roi_heads.pooler=pool", ["model.roi_heads.pooler", "C4"]),
    ("model.backbone.out_features=[res4]", ["model.backbone.out_features"]),
    ("data.train=[]", ["data.train"]),
])
def test_config_values_the_builders_refuse(capsys, shapes, override, words):
    """What the schema cannot check, the builders do: a ValueError naming the key is a config error."""
    expect_error(_train_det(capsys, shapes, "builder", override), 2, *words, case=f"train_det {override}")
