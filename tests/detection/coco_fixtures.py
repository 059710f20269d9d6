"""Tiny COCO datasets written to disk for the detection tests."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 11, "name": "triangle"},
              {"id": 20, "name": "unused"}]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths over the column-major flattened mask, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rect_polygon(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def random_gt(seed: int = 0, num_images: int = 12, width: int = 200, height: int = 150) -> dict:
    """Ground truth with image ids from 0, category ids 3/7/11/20 (20 without any instance), images
    without annotations, a polygon crowd and an uncompressed-RLE crowd region."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i:03d}.png", "width": width, "height": height} for i in range(num_images)]
    anns, next_id = [], 1
    for img in images[: num_images - 3]:  # the last three images have no annotations
        for _ in range(int(rng.integers(1, 6))):
            w, h = rng.uniform(4, 70), rng.uniform(4, 60)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            anns.append({"id": next_id, "image_id": img["id"], "category_id": int(rng.choice([3, 7, 11])),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                         "segmentation": rect_polygon(x, y, x + w, y + h)})
            next_id += 1
    crowd = np.zeros((height, width), np.uint8)
    crowd[10:80, 20:130] = 1
    anns.append({"id": next_id, "image_id": 1, "category_id": 3, "bbox": [20, 10, 110, 70],
                 "area": int(crowd.sum()), "iscrowd": 1, "segmentation": uncompressed_rle(crowd)})
    anns.append({"id": next_id + 1, "image_id": 2, "category_id": 7, "bbox": [100, 50, 60, 60],
                 "area": 3600.0, "iscrowd": 1, "segmentation": rect_polygon(100, 50, 160, 110)})
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def box_mask(bbox, height: int, width: int) -> np.ndarray:
    x, y, w, h = bbox
    m = np.zeros((height, width), np.uint8)
    m[max(0, int(round(y))): int(round(y + h)), max(0, int(round(x))): int(round(x + w))] = 1
    return m


def perturbed_results(gt: dict, seed: int = 1) -> list:
    """Detections near most ground-truth boxes plus false positives (some in images without gt, some
    of the category without gt), with RLE masks; missing detections leave false negatives."""
    rng = np.random.default_rng(seed)
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    results = []

    def add(image_id, category_id, bbox):
        h, w = sizes[image_id]
        results.append({"image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in bbox],
                        "score": float(rng.uniform(0.05, 1.0)),
                        "segmentation": compressed_rle(box_mask(bbox, h, w))})

    for ann in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        jitter = rng.normal(0, 2.5, 4)
        x, y, w, h = ann["bbox"]
        add(ann["image_id"], ann["category_id"], [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                                  max(1.0, h + jitter[3])])
    for _ in range(20):
        image_id = int(rng.integers(0, len(gt["images"])))
        h, w = sizes[image_id]
        add(image_id, int(rng.choice([3, 7, 11, 20])),
            [rng.uniform(0, w - 40), rng.uniform(0, h - 40), rng.uniform(2, 40), rng.uniform(2, 40)])
    return results


def write_json(data, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def write_image(path: str, image: np.ndarray) -> None:
    """Write an RGB (or gray / RGBA / 16-bit) array with OpenCV."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(path, image), path


def roboflow_style(json_path: str, out_path: str, null_boxes: int = 2) -> dict:
    """Rewrite a COCO json the way annotation-tool exports (Roboflow) come: a placeholder category id 0
    that no annotation uses (the supercategory of the others), the real categories renumbered from 1,
    image and annotation ids from 0, every ``segmentation`` an empty list, and ``null_boxes`` extra
    annotations whose box is ``[x, y, null, null]``."""
    with open(json_path) as f:
        data = json.load(f)
    cat_ids = sorted(c["id"] for c in data["categories"])
    new_cat = {old: i + 1 for i, old in enumerate(cat_ids)}
    categories = [{"id": 0, "name": "pieces", "supercategory": "none"}]
    categories += [{"id": new_cat[c["id"]], "name": c["name"], "supercategory": "pieces"}
                   for c in sorted(data["categories"], key=lambda c: c["id"])]
    image_ids = {img["id"]: i for i, img in enumerate(sorted(data["images"], key=lambda im: im["id"]))}
    images = [dict(img, id=image_ids[img["id"]]) for img in data["images"]]
    annotations = [dict(a, id=i, image_id=image_ids[a["image_id"]], category_id=new_cat[a["category_id"]],
                        segmentation=[], iscrowd=0) for i, a in enumerate(data["annotations"])]
    for k in range(null_boxes):
        annotations.append({"id": len(annotations), "image_id": images[k % len(images)]["id"], "category_id": 1,
                            "bbox": [3, 4, None, None], "area": 0, "iscrowd": 0, "segmentation": []})
    out = {"info": {"description": "roboflow-style"}, "images": images, "annotations": annotations,
           "categories": categories}
    write_json(out, out_path)
    return out


def corrupt_jpeg(path: str, size: int = 48) -> None:
    """A JPEG cut short and closed with an EOI marker: OpenCV decodes it, and libjpeg prints
    'Corrupt JPEG data: premature end of data segment' on the C stderr."""
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    data = buf.tobytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] + b"\xff\xd9")
