"""The synthetic shapes dataset: deterministic, valid COCO, masks that describe what is visible."""
import contextlib
import hashlib
import io
import json
import os
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from detection.coco_dataset import CocoDetection
from detection.dataset_check import check_dataset
from detection.synthetic import CATEGORY_IDS, DEFAULT_KINDS, make_image, make_shapes_dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import make_shapes  # noqa: E402  (tools/ is not a package; main() runs in-process: no second torch import)


def digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(root, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_deterministic_and_passes_check_dataset(tmp_path):
    a = make_shapes_dataset(str(tmp_path / "a"), num_train=40, num_val=10, size=96, seed=3)
    b = make_shapes_dataset(str(tmp_path / "b"), num_train=40, num_val=10, size=96, seed=3)
    c = make_shapes_dataset(str(tmp_path / "c"), num_train=40, num_val=10, size=96, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    for split in ("train", "val"):
        report = check_dataset(*a[split])
        assert not report.counts, report.format()
    data = json.load(open(a["train"][0]))
    assert [c["id"] for c in data["categories"]] == [3, 7, 11, 15, 20, 24] == list(CATEGORY_IDS[:6])
    assert [c["name"] for c in data["categories"]] == list(DEFAULT_KINDS)
    assert data["images"][0]["id"] == 0
    assert {ann["category_id"] for ann in data["annotations"]} <= set(CATEGORY_IDS)
    assert len(data["annotations"]) > 40  # several shapes per image


def test_polygons_rasterise_to_the_visible_area(tmp_path):
    json_path, images = make_shapes_dataset(str(tmp_path), num_train=30, num_val=0, size=96, seed=1)["train"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_path)
    for ann in coco.dataset["annotations"]:
        mask = coco.annToMask(ann)
        assert int(mask.sum()) == ann["area"] and ann["iscrowd"] == 0
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == ann["bbox"]
    ds = CocoDetection(json_path, images, with_masks=True)
    assert ds.stats["dropped_no_mask"] == 0 and ds.stats["dropped_boxes"] == 0
    image, target = ds[1]
    assert target["masks"].shape[0] == len(target["labels"]) and image.shape == (3, 96, 96)


def test_later_shapes_cover_earlier_ones():
    covered_somewhere = False
    for seed in range(30):
        image, instances = make_image(np.random.default_rng(seed), 128)
        union = np.zeros((128, 128), int)
        for inst in instances:
            union += inst["mask"]
            # the visible part shows exactly the shape's own colour (shapes are not anti-aliased)
            assert (image[inst["mask"]] == np.array(inst["color"], np.uint8)).all()
            assert inst["mask"].sum() >= 0.4 * inst["full_area"]  # almost hidden shapes are not placed
            covered_somewhere |= inst["mask"].sum() < inst["full_area"]
        assert union.max() <= 1  # visible parts never overlap
    assert covered_somewhere


def test_tool(tmp_path, capsys):
    assert make_shapes.main(["--out", str(tmp_path), "--num-train", "5", "--num-val", "3", "--size", "64",
                             "--seed", "2"]) == 0
    assert len(json.load(open(tmp_path / "val.json"))["images"]) == 3
    assert len(os.listdir(tmp_path / "train")) == 5
    with pytest.raises(SystemExit) as exit_info:
        make_shapes.main(["--out", str(tmp_path), "--kinds", "circle,blob"])
    assert exit_info.value.code == 2 and "blob" in capsys.readouterr().err
