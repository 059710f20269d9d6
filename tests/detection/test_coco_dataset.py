"""CocoDetection: category mapping, filtering counted in stats, masks, image decoding errors."""
import os

import numpy as np
import pytest
import torch

from coco_fixtures import rect_polygon, uncompressed_rle, write_image, write_json
from detection.batching import collate_detection
from detection.coco_dataset import CocoDetection, ConcatCocoDetection
from detection.transforms import build_train_transform
from engine.data import DataError

CATS = [{"id": 11, "name": "triangle"}, {"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]


def make_dataset(root, annotations=None, images=None, pixels=None):
    """Images 0 (64x48, two objects drawn), 1 (48x64, no annotation) and whatever ``images`` adds."""
    images = images or [{"id": 0, "file_name": "a.png", "width": 64, "height": 48},
                        {"id": 1, "file_name": "b.png", "width": 48, "height": 64}]
    for img in images:
        path = os.path.join(root, "images", img["file_name"])
        if pixels and img["file_name"] in pixels:
            if pixels[img["file_name"]] is not None:
                write_image(path, pixels[img["file_name"]])
            continue
        image = np.full((img["height"], img["width"], 3), 30, np.uint8)
        image[10:30, 5:25] = (250, 0, 0)  # the square of annotation 1
        write_image(path, image)
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 0, "category_id": 7, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0,
             "segmentation": rect_polygon(5, 10, 25, 30)},
            {"id": 2, "image_id": 0, "category_id": 3, "bbox": [40, 5, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": rect_polygon(40, 5, 50, 13)},
        ]
    path = write_json({"images": images, "annotations": annotations, "categories": CATS},
                      os.path.join(root, "ann.json"))
    return path, os.path.join(root, "images")


def test_category_mapping_and_target_format(tmp_path):
    json_path, images = make_dataset(str(tmp_path))
    ds = CocoDetection(json_path, images, with_masks=True)
    assert ds.contiguous_to_id == {1: 3, 2: 7, 3: 11} and ds.id_to_contiguous == {3: 1, 7: 2, 11: 3}
    assert ds.class_names == ["circle", "square", "triangle"] and ds.num_categories == 3
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert image[:, 15, 10].tolist() == [250, 0, 0]  # RGB order
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[5, 10, 25, 30], [40, 5, 50, 13]]
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 0 and target["orig_size"] == (48, 64) == target["size"]
    assert target["area"].tolist() == [400, 80] and target["iscrowd"].tolist() == [0, 0]
    assert target["masks"].shape == (2, 48, 64) and target["masks"].dtype == torch.uint8
    assert target["masks"][0].sum() == 400 and target["masks"][0, 10:30, 5:25].all()
    # aspect-ratio groups from the json, without decoding
    assert ds.aspect_ratios() == [64 / 48, 48 / 64] and ds.group_ids() == [0, 1]


def test_empty_images_kept_or_dropped(tmp_path):
    json_path, images = make_dataset(str(tmp_path))
    kept = CocoDetection(json_path, images)
    assert len(kept) == 2 and kept[1][1]["boxes"].shape == (0, 4) and kept[1][1]["labels"].shape == (0,)
    dropped = CocoDetection(json_path, images, keep_empty=False)
    assert len(dropped) == 1 and dropped.stats["empty_images_dropped"] == 1
    with_masks = CocoDetection(json_path, images, with_masks=True)
    assert with_masks[1][1]["masks"].shape == (0, 64, 48)


def test_crowd_bad_and_outside_boxes_counted(tmp_path):
    crowd = np.zeros((48, 64), np.uint8)
    crowd[0:10, 0:10] = 1
    anns = [
        {"id": 1, "image_id": 0, "category_id": 7, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0,
         "segmentation": rect_polygon(5, 10, 25, 30)},
        {"id": 2, "image_id": 0, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1,
         "segmentation": uncompressed_rle(crowd)},
        {"id": 3, "image_id": 0, "category_id": 3, "bbox": [5, 5, 0, 4], "area": 0, "iscrowd": 0},
        {"id": 4, "image_id": 0, "category_id": 3, "bbox": [5, 5, 4, -1], "area": 0, "iscrowd": 0},
        {"id": 5, "image_id": 0, "category_id": 3, "bbox": [5, 5, float("nan"), 4], "area": 0, "iscrowd": 0},
        {"id": 6, "image_id": 0, "category_id": 3, "bbox": [70, 5, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 7, "image_id": 0, "category_id": 11, "bbox": [-5, 40, 20, 20], "area": 400, "iscrowd": 0},
    ]
    json_path, images = make_dataset(str(tmp_path), anns)
    ds = CocoDetection(json_path, images)
    assert ds.stats["crowd_ignored"] == 1 and ds.stats["dropped_boxes"] == 4 and ds.stats["clipped_boxes"] == 1
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 3]
    assert target["boxes"].tolist() == [[5, 10, 25, 30], [0, 40, 15, 48]]  # clipped to 64x48


def test_empty_segmentation_lists(tmp_path):
    anns = [
        {"id": 1, "image_id": 0, "category_id": 7, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0,
         "segmentation": rect_polygon(5, 10, 25, 30)},
        {"id": 2, "image_id": 0, "category_id": 3, "bbox": [40, 5, 10, 8], "area": 80, "iscrowd": 0,
         "segmentation": []},
        {"id": 3, "image_id": 0, "category_id": 3, "bbox": [40, 20, 10, 8], "area": 80, "iscrowd": 0,
         "segmentation": [[1, 2, 3, 4]]},  # too few points to be a polygon
    ]
    json_path, images = make_dataset(str(tmp_path), anns)
    boxes_only = CocoDetection(json_path, images)
    assert boxes_only[0][1]["labels"].tolist() == [2, 1, 1]  # box training keeps them
    masks = CocoDetection(json_path, images, with_masks=True)
    assert masks.stats["dropped_no_mask"] == 2  # mask training drops them, as detectron2 does
    _, target = masks[0]
    assert target["labels"].tolist() == [2] and target["masks"].shape == (1, 48, 64)


def test_unknown_category_is_an_error_naming_the_annotation(tmp_path):
    anns = [{"id": 9, "image_id": 0, "category_id": 5, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0}]
    json_path, images = make_dataset(str(tmp_path), anns)
    with pytest.raises(DataError, match=r"1 unknown_category_id; e.g. annotation id 9 \(image id 0\): category_id 5"):
        CocoDetection(json_path, images)


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit"])
def test_unusual_image_formats_become_rgb_uint8(tmp_path, kind):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    pixels = {"gray": np.full((48, 64), 77, np.uint8),
              "rgba": np.concatenate([rgb, np.full((48, 64, 1), 9, np.uint8)], axis=2),
              "16bit": rgb.astype(np.uint16) * 257}[kind]
    json_path, images = make_dataset(str(tmp_path), pixels={"a.png": pixels})
    image, _ = CocoDetection(json_path, images)[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    expected = [77, 77, 77] if kind == "gray" else [200, 100, 50]
    assert image[:, 0, 0].tolist() == expected


@pytest.mark.parametrize("problem, message", [
    ("missing", "file not found; check the images directory"),
    ("corrupt", "not an image OpenCV can decode"),
    ("size", "decoded size 30x20 (w x h) differs from the json's 64x48"),
])
def test_bad_image_files_name_the_file_and_id(tmp_path, problem, message):
    json_path, images = make_dataset(str(tmp_path), pixels={"a.png": None})
    path = os.path.join(images, "a.png")
    if problem == "corrupt":
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n not really a png")
    elif problem == "size":
        write_image(path, np.zeros((20, 30, 3), np.uint8))
    ds = CocoDetection(json_path, images)
    with pytest.raises(DataError) as info:
        ds[0]
    assert message in str(info.value) and path in str(info.value) and "image id 0" in str(info.value)
    skipping = CocoDetection(json_path, images, skip_bad=True)
    with pytest.warns(UserWarning, match="a.png"):
        assert skipping[0] is None
    assert skipping.stats["skipped_images"] == 1
    images_list, targets = collate_detection([skipping[1], None])
    assert len(images_list) == 1 and targets[0]["image_id"] == 1


def test_seeded_items_are_reproducible(tmp_path):
    json_path, images = make_dataset(str(tmp_path))
    ds = CocoDetection(json_path, images, with_masks=True,
                       transform=build_train_transform(min_sizes=(32, 40, 48, 56, 64, 72), max_size=100))
    outputs = {seed: ds[(0, seed)] for seed in range(8)}
    again = ds[(0, 5)]
    assert torch.equal(again[0], outputs[5][0]) and torch.equal(again[1]["boxes"], outputs[5][1]["boxes"])
    assert len({tuple(o[0].shape) for o in outputs.values()}) > 1  # different seeds, different scales
    for image, target in outputs.values():
        assert target["size"] == tuple(image.shape[1:]) and target["orig_size"] == (48, 64)
        assert target["masks"].shape[1:] == image.shape[1:]


def test_concat_shares_the_mapping(tmp_path):
    a, images_a = make_dataset(str(tmp_path / "a"))
    b, images_b = make_dataset(str(tmp_path / "b"))
    ds = ConcatCocoDetection.from_files([(a, images_a), (b, images_b)], keep_empty=False)
    assert len(ds) == 2 and ds.contiguous_to_id == {1: 3, 2: 7, 3: 11}
    assert ds.group_ids() == [0, 0] and ds.stats["empty_images_dropped"] == 2
    assert ds[(1, 3)][1]["labels"].tolist() == [2, 1]
    # a second json whose categories are not those of the first: its annotations must use them
    odd = [{"id": 1, "image_id": 0, "category_id": 99, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0}]
    c, images_c = make_dataset(str(tmp_path / "c"), odd)
    with pytest.raises(DataError, match="category_id 99"):
        ConcatCocoDetection.from_files([(a, images_a), (c, images_c)])


def test_annotation_of_a_missing_image_is_an_error(tmp_path):
    anns = [{"id": 4, "image_id": 17, "category_id": 3, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0}]
    json_path, images = make_dataset(str(tmp_path), anns)
    with pytest.raises(DataError, match=r"ann.json: none of its 1 annotations is usable \(1 unknown_image_id; e.g. annotation id 4 \(image id 17\)\)"):
        CocoDetection(json_path, images)
