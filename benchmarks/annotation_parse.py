"""The annotation reading path against pycocotools' ``COCO()`` on one generated COCO json, in one process.

    PYTHONPATH=. python benchmarks/annotation_parse.py --images 10000 [--reps 3]

Writes a COCO-like json (about 7 annotations an image, polygons of 8-40 points, 1% crowd RLEs,
90 categories) into a temporary folder, then, alternating, times ``COCO(path)``,
:func:`detection.coco.load_coco` with an empty cache (read, clean, flatten, write the cache) and
again (a cache hit: hash the file, map the arrays). CPU includes the child process that builds the
cache. The full-size measurement (118k images, ranks and workers) is ``benchmarks/coco_scale.py``.
"""
import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_json(path: str, num_images: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, num_images + 1):
        W, H = int(rng.integers(400, 640)), int(rng.integers(300, 480))
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": W, "height": H, "license": 1})
        for _ in range(int(rng.poisson(7.3))):
            w, h = float(rng.uniform(5, W / 2)), float(rng.uniform(5, H / 2))
            x, y = float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h))
            if rng.random() < 0.01:
                counts = [int(v) for v in rng.integers(1, 50, 40)]
                seg, crowd = {"counts": counts + [W * H - sum(counts)], "size": [H, W]}, 1
            else:
                t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(8, 40))))
                seg = [np.round(np.stack([x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))], 1).ravel(), 2).tolist()]
                crowd = 0
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 91)), "iscrowd": crowd,
                         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h * 0.7, 4),
                         "segmentation": seg})
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": c, "name": f"cat{c}"} for c in range(1, 91)]}, f)
    return len(anns)


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(fn):
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return time.perf_counter() - wall, _cpu() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="annotation_parse_")
    cache = os.environ["RESKIT_CACHE"] = os.path.join(folder, "cache")
    from pycocotools.coco import COCO

    from detection.coco import load_coco
    try:
        path = os.path.join(folder, "instances.json")
        n = make_json(path, args.images)
        print(f"{path}: {args.images:,} images, {n:,} annotations, {os.path.getsize(path) / 1e6:.0f} MB")
        for rep in range(args.reps):
            shutil.rmtree(cache, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
                cw, cc, _ = _timed(lambda: COCO(path))
            fw, fc, _ = _timed(lambda: load_coco(path))
            hw, hc, index = _timed(lambda: load_coco(path))
            print(f"rep {rep}: COCO() {cw:.2f} s wall, {cc:.2f} s CPU | load_coco, empty cache {fw:.2f} s / {fc:.2f} s "
                  f"({fw / cw:.2f}x / {fc / cc:.2f}x COCO()) | cache hit {hw:.3f} s / {hc:.3f} s "
                  f"({100 * hw / cw:.1f}% / {100 * hc / cc:.1f}% of COCO())")
        print(index.describe())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
