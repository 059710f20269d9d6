"""Generated COCO-sized data for benchmarks/coco_scale.py: no download, COCO's counts and shapes.

- ``write_coco_json``: a train2017-sized (118,287 images, ~860k annotations) or val2017-sized
  (5,000 images, ~36k annotations) instances json. Per image a Poisson number of instances (mean
  7.27, COCO's 860,001 / 118,287), boxes of COCO-like sizes (about 41% small, 34% medium, 25% large
  by area), polygons around an irregular ellipse in the box with COCO-like lengths (median 20
  points, a long tail; ~500 bytes of json an annotation), 1% crowd regions as uncompressed RLE
  (COCO's ``{"counts": [...], "size": [h, w]}``), the 80 categories with COCO's ids (1..90 with
  gaps). Written as a stream, chunk by chunk (orjson), so the generator never holds the whole file.
- ``write_image_links``: the image files, a handful of generated JPEGs linked under every file name
  (hard links where the filesystem allows, else symbolic), with the sizes the json records.
- ``write_results``: a detections file of the val-sized json (bbox + RLE segm, 100 per image:
  500,000 for 5,000 images), what a Mask R-CNN writes.
- ``write_image_folder``: an ImageFolder tree of links (classes x files) for the scan timing.

Every function is a function of its arguments and ``seed`` (the same files again).
"""
from __future__ import annotations

import os
from typing import Iterator, List, Tuple

import cv2
import numpy as np
import orjson
from pycocotools import mask as mask_utils

# COCO's 80 category ids (1..90 with gaps) and names.
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
            32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
            58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
            88, 89, 90]
# (width, height) of the generated image files; COCO's images are mostly 640 on the long side.
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (640, 360), (500, 375), (612, 612), (640, 512), (427, 640)]
MEAN_INSTANCES = 860001 / 118287
TRAIN_IMAGES, VAL_IMAGES = 118287, 5000


def _categories() -> List[dict]:
    return [{"id": i, "name": f"category_{i}", "supercategory": "thing"} for i in COCO_IDS]


def _image_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def _image_ids(num_images: int, rng: np.random.Generator) -> np.ndarray:
    """COCO-like ids: unique, not contiguous, not sorted by position."""
    return np.sort(rng.choice(np.arange(1, num_images * 5), size=num_images, replace=False))


def _boxes(n: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 4] xywh inside a w x h image; areas COCO-like (about 41% < 32^2, 34% < 96^2)."""
    side = np.exp(rng.normal(np.log(52.0), 1.0, n)).clip(2.0, min(w, h) * 0.98)
    aspect = np.exp(rng.normal(0.0, 0.5, n))
    bw = (side * np.sqrt(aspect)).clip(1.0, w - 1)
    bh = (side / np.sqrt(aspect)).clip(1.0, h - 1)
    x = rng.uniform(0, w - bw)
    y = rng.uniform(0, h - bh)
    return np.round(np.stack([x, y, bw, bh], 1), 2)


def _polygon(box: np.ndarray, rng: np.random.Generator) -> List[float]:
    """An irregular ellipse in ``box``, COCO-like number of points (median 20, long tail)."""
    points = int(np.clip(rng.lognormal(np.log(20.0), 0.6), 4, 400))
    x, y, bw, bh = box
    t = np.sort(rng.uniform(0, 2 * np.pi, points))
    r = rng.uniform(0.7, 1.0, points)
    px = x + bw / 2 + np.cos(t) * r * bw / 2
    py = y + bh / 2 + np.sin(t) * r * bh / 2
    return np.round(np.stack([px, py], 1).reshape(-1), 2).tolist()


def _box_rle_counts(box: np.ndarray, w: int, h: int) -> List[int]:
    """Uncompressed (column-major) RLE counts of the integer box, as COCO's crowd regions."""
    x0, y0 = int(box[0]), int(box[1])
    x1, y1 = min(w, max(x0 + 1, int(box[0] + box[2]))), min(h, max(y0 + 1, int(box[1] + box[3])))
    counts = [x0 * h + y0]
    for _ in range(x0, x1 - 1):
        counts += [y1 - y0, h - (y1 - y0)]
    counts += [y1 - y0, h * w - sum(counts) - (y1 - y0)]
    return counts


def _images(num_images: int, rng: np.random.Generator) -> List[Tuple[int, int, int]]:
    ids = _image_ids(num_images, rng)
    sizes = rng.integers(0, len(IMAGE_SIZES), num_images)
    return [(int(i), *IMAGE_SIZES[s]) for i, s in zip(ids, sizes)]


def _annotation_chunks(images, rng: np.random.Generator, chunk: int = 2000) -> Iterator[List[dict]]:
    next_id = 1
    for start in range(0, len(images), chunk):
        out = []
        for image_id, w, h in images[start:start + chunk]:
            n = int(rng.poisson(MEAN_INSTANCES))
            if n == 0:
                continue
            boxes = _boxes(n, w, h, rng)
            cats = rng.choice(COCO_IDS, n)
            crowd = rng.random(n) < 0.01
            for box, cat, is_crowd in zip(boxes, cats, crowd):
                if is_crowd:
                    segm = {"counts": _box_rle_counts(box, w, h), "size": [h, w]}
                    area = float(box[2] * box[3])
                else:
                    segm = [_polygon(box, rng)]
                    area = float(round(np.pi * box[2] * box[3] / 4 * 0.85, 2))
                out.append({"segmentation": segm, "area": area, "iscrowd": int(is_crowd), "image_id": image_id,
                            "bbox": box.tolist(), "category_id": int(cat), "id": next_id})
                next_id += 1
        yield out


def write_coco_json(path: str, num_images: int, seed: int = 0) -> dict:
    """Write the instances json; returns its counts ({"images", "annotations", "crowd", "bytes"})."""
    rng = np.random.default_rng(seed)
    images = _images(num_images, rng)
    tmp = path + ".tmp"
    annotations = crowd = 0
    with open(tmp, "wb") as f:
        f.write(b'{"info":{"description":"reskit benchmarks/coco_scale.py"},"licenses":[],"images":')
        f.write(orjson.dumps([{"license": 1, "file_name": _image_name(i), "height": h, "width": w, "id": i}
                              for i, w, h in images]))
        f.write(b',"annotations":[')
        first = True
        for anns in _annotation_chunks(images, rng):
            if not anns:
                continue
            body = orjson.dumps(anns)[1:-1]
            f.write(body if first else b"," + body)
            first = False
            annotations += len(anns)
            crowd += sum(a["iscrowd"] for a in anns)
        f.write(b'],"categories":' + orjson.dumps(_categories()) + b"}")
    os.replace(tmp, path)
    return {"images": num_images, "annotations": annotations, "crowd": crowd, "bytes": os.path.getsize(path)}


def _base_images(folder: str, seed: int) -> dict:
    """One generated JPEG per size in IMAGE_SIZES: {(w, h): path}."""
    from engine import shapes

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for w, h in IMAGE_SIZES:
        path = os.path.join(folder, f"base_{w}x{h}.jpg")
        if not os.path.isfile(path):
            image = shapes.random_background(rng, h, w)
            cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out[(w, h)] = path
    return out


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def write_image_links(json_path: str, folder: str, base_folder: str, seed: int = 0) -> int:
    """The image files of ``json_path`` as links to a few generated JPEGs of the right sizes."""
    with open(json_path, "rb") as f:
        images = orjson.loads(f.read())["images"]
    bases = _base_images(base_folder, seed)
    os.makedirs(folder, exist_ok=True)
    made = 0
    for img in images:
        dst = os.path.join(folder, img["file_name"])
        if not os.path.lexists(dst):
            _link(bases[(img["width"], img["height"])], dst)
            made += 1
    return made


def write_results(json_path: str, path: str, per_image: int = 100, seed: int = 1) -> int:
    """Detections of every image of ``json_path`` (bbox + compressed RLE of an irregular ellipse)."""
    rng = np.random.default_rng(seed)
    with open(json_path, "rb") as f:
        data = orjson.loads(f.read())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    tmp = path + ".tmp"
    count = 0
    with open(tmp, "wb") as f:
        f.write(b"[")
        for k, img in enumerate(data["images"]):
            w, h = img["width"], img["height"]
            gts = by_image.get(img["id"], [])
            # detections near the ground truth first, then false positives
            near = np.array([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4)
            near = near + rng.normal(0, 3, near.shape)
            boxes = np.concatenate([near, _boxes(per_image - len(near), w, h, rng)])[:per_image]
            boxes[:, 2:] = boxes[:, 2:].clip(1, None)
            boxes[:, 0] = boxes[:, 0].clip(0, w - 1)
            boxes[:, 1] = boxes[:, 1].clip(0, h - 1)
            boxes[:, 2] = np.minimum(boxes[:, 2], w - boxes[:, 0])
            boxes[:, 3] = np.minimum(boxes[:, 3], h - boxes[:, 1])
            boxes = np.round(boxes, 2)
            cats = [g["category_id"] for g in gts] + rng.choice(COCO_IDS, per_image).tolist()
            rles = mask_utils.frPyObjects([_polygon(b, rng) for b in boxes], h, w)
            scores = np.round(rng.uniform(0.05, 1.0, len(boxes)), 5)
            records = [{"image_id": img["id"], "category_id": int(cats[j]), "bbox": boxes[j].tolist(),
                        "score": float(scores[j]),
                        "segmentation": {"size": [h, w], "counts": rles[j]["counts"].decode("ascii")}}
                       for j in range(len(boxes))]
            body = orjson.dumps(records)[1:-1]
            f.write(body if k == 0 else b"," + body)
            count += len(records)
        f.write(b"]")
    os.replace(tmp, path)
    return count


def write_image_folder(root: str, base_images: List[str], classes: int, per_class: int) -> int:
    """``root/nXXXXXXXX/nXXXXXXXX_N.JPEG``: ``classes x per_class`` hard links (regular files, as a real
    tree has; a scan of symbolic links would stat each one) spread over ``base_images``."""
    made = 0
    for c in range(classes):
        name = f"n{c:08d}"
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            dst = os.path.join(folder, f"{name}_{i}.JPEG")
            if not os.path.lexists(dst):
                _link(base_images[(c * per_class + i) % len(base_images)], dst)
                made += 1
    return made
