"""The flat-array annotation path gives the same training targets, bit for bit, as the per-record
dicts it replaced (kept below as the reference: pycocotools' index of the cleaned json, then the old
per-annotation clipping), for every index; and the cached start reads the same arrays."""
import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from coco_fixtures import compressed_rle, uncompressed_rle, write_image
from detection.annotations import clean_coco
from detection.coco import load_coco
from detection.coco_dataset import CocoDetection
from detection.masks import has_mask, segmentation_to_mask

CATS = [{"id": 9, "name": "b"}, {"id": 2, "name": "a"}, {"id": 40, "name": "c"}]


def _json(root) -> str:
    rng = np.random.default_rng(3)
    images = [{"id": i, "file_name": f"{i}.png", "width": int(rng.integers(30, 60)), "height": int(rng.integers(30, 60))}
              for i in (7, 3, 12, 5, 0, 9)]
    anns, next_id = [], 0
    for _ in range(40):
        img = images[int(rng.integers(0, 5))]  # image 9 has no annotation
        W, H = img["width"], img["height"]
        x, y = float(rng.uniform(-10, W - 5)), float(rng.uniform(-10, H - 5))
        w, h = float(rng.uniform(3, 30)), float(rng.uniform(3, 30))
        if rng.random() < 0.3:
            x, y, w, h = int(x), int(y), int(w) + 1, int(h) + 1
        ann = {"id": next_id, "image_id": img["id"], "category_id": int(rng.choice([9, 2, 40])),
               "bbox": [x, y, w, h], "area": w * h * 0.7, "iscrowd": 0}
        kind = rng.random()
        mask = np.zeros((H, W), np.uint8)
        mask[max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)] = 1
        if kind < 0.4:  # polygons, some of two parts, ints and floats
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h], [int(x) + 1, int(y) + 1, int(x) + 3, int(y) + 1,
                                                                    int(x) + 2, int(y) + 4]][: int(rng.integers(1, 3))]
        elif kind < 0.55:
            ann["segmentation"] = compressed_rle(mask)
        elif kind < 0.7:
            ann["segmentation"], ann["iscrowd"] = uncompressed_rle(mask), 1
        elif kind < 0.8:
            ann["segmentation"] = uncompressed_rle(mask)
        elif kind < 0.85:
            ann["segmentation"] = []
        elif kind < 0.9:
            del ann["area"]  # cleaning fills w*h
        anns.append(ann)
        next_id += 1
    anns += [{"id": 100, "image_id": 3, "category_id": 2, "bbox": [1, 1, None, None], "area": 1},  # dropped
             {"id": 101, "image_id": 3, "category_id": 2, "bbox": [500, 1, 5, 5], "area": 25},  # outside: dropped
             {"id": 102, "image_id": 3, "category_id": 9, "bbox": [-5, -5, 200, 200], "area": 9,  # clipped
              "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
             {"id": 103, "image_id": 7, "category_id": 40, "bbox": [2, 2, 5, 5], "iscrowd": 1,
              "segmentation": [[2, 2, 7, 2, 7, 7]], "area": 12}]
    order = rng.permutation(len(anns))
    path = os.path.join(root, "ann.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": [anns[i] for i in order], "categories": CATS}, f)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for img in images:
        write_image(os.path.join(root, "images", img["file_name"]), np.zeros((img["height"], img["width"], 3), np.uint8))
    return path


def _reference(json_path, with_masks, keep_empty):
    """The dict path this replaced: records of pycocotools' index, boxes clipped one by one."""
    with open(json_path) as f:
        data = clean_coco(json.load(f), json_path).data
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    id_map = {c: i + 1 for i, c in enumerate(sorted(c["id"] for c in data["categories"]))}
    records, clipped = [], 0
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        width, height = info["width"], info["height"]
        boxes, labels, areas, segms = [], [], [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            assert x2 > x1 and y2 > y1
            clipped += (x1, y1, x2, y2) != (x, y, x + w, y + h)
            if with_masks and not has_mask(ann.get("segmentation")):
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(id_map[ann["category_id"]])
            areas.append(float(ann["area"]))
            segms.append(ann.get("segmentation"))
        if labels or keep_empty:
            records.append({"image_id": image_id, "file_name": info["file_name"], "height": height, "width": width,
                            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                            "labels": np.asarray(labels, np.int64), "areas": np.asarray(areas, np.float32),
                            "masks": [segmentation_to_mask(s, height, width) for s in segms] if with_masks else None})
    return records, clipped


@pytest.mark.parametrize("with_masks,keep_empty", [(False, True), (True, True), (True, False)])
def test_targets_equal_the_per_record_path_bit_for_bit(tmp_path, monkeypatch, with_masks, keep_empty):
    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "cache"))
    path = _json(str(tmp_path))
    expected, clipped = _reference(path, with_masks, keep_empty)
    for attempt in ("parsed", "cache hit"):
        ds = CocoDetection(path, str(tmp_path / "images"), with_masks=with_masks, keep_empty=keep_empty)
        assert (ds.index.entry.hit, attempt) in ((False, "parsed"), (True, "cache hit"))
        assert len(ds) == len(expected) and ds.stats["clipped_boxes"] == clipped > 0
        assert ds.stats["dropped_boxes"] == 2 and ds.stats["crowd_ignored"] > 1
        mask_pixels = 0
        for i, ref in enumerate(expected):
            record, targets = ds.record(i), ds.targets(i)
            assert record == {k: ref[k] for k in ("image_id", "file_name", "height", "width")}
            for key in ("boxes", "labels", "areas"):
                assert targets[key].dtype == ref[key].dtype and targets[key].tobytes() == ref[key].tobytes(), key
            image, target = ds[i]
            assert target["boxes"].numpy().tobytes() == ref["boxes"].tobytes()
            if with_masks:
                got = target["masks"].numpy()
                assert got.shape[0] == len(ref["masks"]) and all((g == r).all() for g, r in zip(got, ref["masks"]))
                mask_pixels += sum(int(m.sum()) for m in ref["masks"])
        assert mask_pixels > 0 or not with_masks


def test_ground_truth_dataset_keeps_every_record(tmp_path, monkeypatch):
    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "cache"))
    path = _json(str(tmp_path))
    with open(path) as f:
        data = clean_coco(json.load(f), path).data
    gt = load_coco(path).ground_truth_dataset()
    by_id = {a["id"]: a for a in gt["annotations"]}
    assert sorted(by_id) == sorted(a["id"] for a in data["annotations"])
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        got = by_id[ann["id"]]
        assert got["bbox"] == ann["bbox"] and got["area"] == ann["area"] and got["category_id"] == ann["category_id"]
        assert got["image_id"] == ann["image_id"] and got["iscrowd"] == ann.get("iscrowd", 0)
        assert ("segmentation" in got) == ("segmentation" in ann)
        if has_mask(ann.get("segmentation")):
            h, w = images[ann["image_id"]]["height"], images[ann["image_id"]]["width"]
            assert (segmentation_to_mask(got["segmentation"], h, w) == segmentation_to_mask(ann["segmentation"], h, w)).all()


def test_the_start_says_where_the_annotations_came_from(tmp_path, monkeypatch, caplog):
    from detection.coco_dataset import ConcatCocoDetection

    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    path = _json(str(tmp_path))
    caplog.set_level("INFO")
    ConcatCocoDetection.from_files([(path, str(tmp_path / "images"))])
    assert f"annotations: {path}: parsed in " in caplog.text and "cached for the next run" in caplog.text
    caplog.clear()
    ConcatCocoDetection.from_files([(path, str(tmp_path / "images"))])
    assert f"annotations: {path}: cache hit ({tmp_path / 'cache'}" in caplog.text
    assert "6 images, 42 annotations, " in caplog.text and "kB shared by 2 ranks" in caplog.text
    with open(path, "a") as f:
        f.write(" ")  # the json changed: rebuilt, and said so
    caplog.clear()
    ConcatCocoDetection.from_files([(path, str(tmp_path / "images"))])
    assert "(the file changed since it was cached), cached for the next run" in caplog.text


def test_a_spawned_worker_maps_the_cache_instead_of_receiving_the_arrays(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "cache"))
    path = _json(str(tmp_path))
    ds = CocoDetection(path, str(tmp_path / "images"), with_masks=True)
    data = pickle.dumps(ds)
    assert b"poly_coords" not in data  # the arrays stay in the cache's files
    again = pickle.loads(data)
    assert isinstance(again.index.poly_coords, np.memmap)
    for i in range(len(ds)):
        a, b = ds.targets(i), again.targets(i)
        assert a["boxes"].tobytes() == b["boxes"].tobytes() and a["segmentations"] == b["segmentations"]
