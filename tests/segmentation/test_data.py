"""COCO -> label maps as torchvision's references/segmentation, folder datasets, bad files."""
import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from engine.data import DataError
from segmentation.data import (VOC_CLASSES, CocoSemanticSegmentation, ConcatSegmentation, FolderSegmentation,
                               read_label_map)

PERSON, DOG, CAR, AEROPLANE, GIRAFFE = 1, 18, 3, 5, 25  # COCO ids; VOC labels 15, 12, 7, 1, none
CATEGORIES = [{"id": i, "name": n} for i, n in
              [(PERSON, "person"), (CAR, "car"), (AEROPLANE, "airplane"), (DOG, "dog"), (GIRAFFE, "giraffe")]]
H, W = 50, 60


def rect(y1, y2, x1, x2):
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def uncompressed_rle(mask):
    flat = mask.flatten(order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def write_coco(tmp_path):
    """Image 0: two overlapping instances, a crowd region, a non-VOC instance, a polygon, an instance
    without a segmentation. Images 1-5 test the 1000-pixel rule through their json areas."""
    anns = []

    def add(image_id, cat, segmentation, area, crowd=0):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "segmentation": segmentation,
                     "area": area, "bbox": [0, 0, 1, 1], "iscrowd": crowd})

    add(0, PERSON, uncompressed_rle(rect(5, 25, 5, 30)), 500)
    add(0, DOG, uncompressed_rle(rect(15, 40, 20, 50)), 750)  # overlaps the person
    add(0, CAR, uncompressed_rle(rect(42, 48, 0, 20)), 120, crowd=1)  # crowd: labelled, as torchvision
    add(0, GIRAFFE, uncompressed_rle(rect(0, 10, 40, 60)), 200)  # not a VOC class
    add(0, AEROPLANE, [[50.0, 2.0, 58.0, 2.0, 58.0, 12.0, 50.0, 12.0]], 80)  # polygon, overlaps the giraffe
    add(0, AEROPLANE, [], 0)  # no segmentation: covers nothing
    for image_id, area in ((1, 999), (2, 1000), (3, 1001)):
        add(image_id, DOG, uncompressed_rle(rect(0, 10, 0, 10)), area / 2)
        add(image_id, PERSON, uncompressed_rle(rect(20, 30, 0, 10)), area / 2)
    add(4, GIRAFFE, uncompressed_rle(rect(0, 40, 0, 40)), 1600)  # only a non-VOC category
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(6)]  # 5: no annotations
    os.makedirs(tmp_path / "images", exist_ok=True)
    rng = np.random.default_rng(0)
    for img in images:
        cv2.imwrite(str(tmp_path / "images" / img["file_name"]), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return str(path), str(tmp_path / "images")


def torchvision_reference(coco, image_id, cat_list):
    """references/segmentation/coco_utils.py: FilterAndRemapCocoCategories + ConvertCocoPolysToMask."""
    anno = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if a["category_id"] in cat_list]
    anno = [a for a in anno if a["segmentation"]]  # pycocotools cannot rasterise an empty list
    masks = torch.stack([torch.as_tensor(coco.annToMask(a), dtype=torch.uint8) for a in anno])
    cats = torch.as_tensor([cat_list.index(a["category_id"]) for a in anno], dtype=masks.dtype)
    target, _ = (masks * cats[:, None, None]).max(dim=0)
    target[masks.sum(0) > 1] = 255
    return target.numpy()


def test_voc_label_maps_equal_torchvision_reference(tmp_path):
    json_path, images = write_coco(tmp_path)
    ds = CocoSemanticSegmentation(json_path, images, "voc")
    assert ds.num_classes == 21 and ds.class_names == VOC_CLASSES
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W) and label.dtype == torch.int64
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_path)
    from segmentation.data import VOC_COCO_CATEGORY_IDS
    np.testing.assert_array_equal(label.numpy(), torchvision_reference(coco, 0, VOC_COCO_CATEGORY_IDS))
    # and by hand:
    assert label[10, 10] == 15 and label[35, 45] == 12  # person alone, dog alone
    assert (label[15:25, 20:30] == 255).all()  # person and dog overlap: ignored
    assert (label[42:48, 0:20] == 7).all()  # the crowd car is labelled
    assert label[5, 45] == 0  # giraffe: background for VOC
    assert label[5, 55] == 1  # the aeroplane polygon over the giraffe: no overlap, the giraffe is not kept
    assert ds.stats["crowd"] == 1 and ds.stats["no_segmentation"] == 1


def test_all_categories_contiguous_by_id(tmp_path):
    json_path, images = write_coco(tmp_path)
    ds = CocoSemanticSegmentation(json_path, images, "all")
    assert ds.num_classes == 6
    assert ds.class_names == ["background", "person", "car", "airplane", "dog", "giraffe"]
    _, label = ds[0]
    assert label[10, 10] == 1 and label[35, 45] == 4 and label[44, 5] == 2
    assert label[5, 45] == 5  # the giraffe is a class now
    assert label[5, 55] == 255  # and overlaps the aeroplane polygon


def test_training_images_with_at_most_1000_labelled_pixels_are_dropped(tmp_path):
    json_path, images = write_coco(tmp_path)
    train = CocoSemanticSegmentation(json_path, images, "voc", min_area=1000)
    assert train.image_ids() == [0, 3]  # 999 and 1000 dropped, 1001 kept
    assert train.stats["small_images_dropped"] == 4  # 1, 2, 4 (no VOC category), 5 (no annotation)
    everything = CocoSemanticSegmentation(json_path, images, "all", min_area=1000)
    assert everything.image_ids() == [0, 3, 4]
    val = CocoSemanticSegmentation(json_path, images, "voc")
    assert len(val) == 6 and (val[5][1] == 0).all()


def test_missing_image_is_a_data_error_naming_it(tmp_path):
    json_path, images = write_coco(tmp_path)
    os.remove(os.path.join(images, "3.png"))
    ds = CocoSemanticSegmentation(json_path, images, "voc")
    with pytest.raises(DataError, match="3.png"):
        ds[3]
    with pytest.warns(UserWarning, match="skipping.*3.png"):
        assert CocoSemanticSegmentation(json_path, images, "voc", skip_bad=True)[3] is None


def save_png(path, array, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8))  # mode L
    if palette:  # mode P, colours unrelated to the indices, as in PASCAL VOC's files
        im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
        assert im.mode == "P"
    im.save(path)


def folder(tmp_path, labels):
    """images/<stem>.png (random pixels) and labels/<stem>.png; stems starting 'pal' as palette PNGs."""
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "images", exist_ok=True)
    for stem, label in labels.items():
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), rng.integers(0, 255, label.shape + (3,), dtype=np.uint8))
        save_png(str(tmp_path / "labels" / f"{stem}.png"), label, palette=stem.startswith("pal"))
    return str(tmp_path / "images"), str(tmp_path / "labels")


def test_folder_with_grayscale_and_palette_label_maps(tmp_path):
    gray = np.zeros((20, 30), np.uint8)
    gray[5:10, 5:10], gray[0, :] = 2, 255
    pal = np.ones((24, 16), np.uint8)
    pal[:, 8:] = 2
    images, labels = folder(tmp_path, {"a_gray": gray, "pal_b": pal})
    assert cv2.imread(os.path.join(labels, "pal_b.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV gives colours
    ds = FolderSegmentation(images, labels, num_classes=3, class_names=["bg", "x", "y"])
    assert len(ds) == 2 and ds.class_names == ["bg", "x", "y"]
    np.testing.assert_array_equal(ds[0][1].numpy(), gray)
    np.testing.assert_array_equal(ds[1][1].numpy(), pal)  # palette indices, not colours
    assert ds[1][0].shape == (3, 24, 16)
    assert len(ConcatSegmentation([ds, ds])) == 4


def test_folder_problems_are_data_errors_naming_the_file(tmp_path):
    ok = np.zeros((8, 8), np.uint8)
    images, labels = folder(tmp_path, {"a": ok, "b": ok, "c": ok, "d": ok})
    os.remove(os.path.join(labels, "d.png"))
    with pytest.raises(DataError, match="d.png needs d.png"):
        FolderSegmentation(images, labels, num_classes=3)
    os.remove(os.path.join(images, "d.png"))
    with open(os.path.join(images, "a.png"), "wb") as f:
        f.write(b"not an image")
    save_png(os.path.join(labels, "b.png"), np.full((8, 8), 7))  # 7 is no class of 3
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(labels, "c.png"))  # colours
    ds = FolderSegmentation(images, labels, num_classes=3)
    with pytest.raises(DataError, match="a.png"):
        ds[0]
    with pytest.raises(DataError, match=r"b.png.*label values \[7\]"):
        ds[1]
    with pytest.raises(DataError, match="c.png.*colours"):
        ds[2]
    with open(os.path.join(labels, "c.png"), "wb") as f:
        f.write(b"\x89PNG broken")
    with pytest.raises(DataError, match="c.png"):
        read_label_map(os.path.join(labels, "c.png"))
    skipping = FolderSegmentation(images, labels, num_classes=3, skip_bad=True)
    with pytest.warns(UserWarning, match="skipping"):
        assert [skipping[i] for i in range(3)] == [None, None, None]
    assert skipping.skipped == 3
