"""Start-up is part of speed: ``tools/eval_coco.py --gt G --results R`` against a five-line
pycocotools script (and the same with faster-coco-eval), whole processes, on one generated
100-image COCO val-like bbox results file.

    python benchmarks/eval_startup.py [--images 100] [--per-image 20] [--repeat 1]

Each side is a fresh ``python`` process timed from start to exit (what a user waits for), so the
import of torch, which eval_coco.py's results-file mode does not need, counts. Goal: eval_coco.py
at least 3x faster than the pycocotools script.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYCOCOTOOLS = """import sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
e = COCOeval(gt, dt, "bbox"); e.evaluate(); e.accumulate(); e.summarize()
"""
FASTER = """import sys
from faster_coco_eval import COCO, COCOeval_faster
gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
e = COCOeval_faster(gt, dt, "bbox"); e.evaluate(); e.accumulate(); e.summarize()
"""


def make_files(folder: str, n_images: int, per_image: int, seed: int = 0):
    """COCO-val-like ground truth (80 categories, ~7 boxes an image, 640x480) and a results file of
    ``per_image`` scored boxes an image, half of them near a ground-truth box."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    categories = [{"id": i + 1, "name": f"class{i}", "supercategory": "thing"} for i in range(80)]
    for img_id in range(1, n_images + 1):
        w, h = 640, 480
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "width": w, "height": h})
        boxes = []
        for _ in range(int(rng.integers(1, 14))):
            bw, bh = rng.uniform(8, 300), rng.uniform(8, 300)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = int(rng.integers(1, 81))
            boxes.append((x, y, bw, bh, cat))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0})
        for k in range(per_image):
            if k % 2 == 0 and boxes:
                x, y, bw, bh, cat = boxes[k // 2 % len(boxes)]
                box = [x + rng.normal(0, 4), y + rng.normal(0, 4), bw * rng.uniform(0.9, 1.1), bh * rng.uniform(0.9, 1.1)]
            else:
                bw, bh = rng.uniform(8, 200), rng.uniform(8, 200)
                box, cat = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], int(rng.integers(1, 81))
            results.append({"image_id": img_id, "category_id": cat, "bbox": [round(float(v), 2) for v in box],
                            "score": round(float(rng.uniform(0.05, 1.0)), 4)})
    gt_path, res_path = os.path.join(folder, "gt.json"), os.path.join(folder, "results.json")
    with open(gt_path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": categories}, f)
    with open(res_path, "w") as f:
        json.dump(results, f)
    return gt_path, res_path, len(anns), len(results)


def timed(cmd: list, env: dict) -> tuple:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return seconds, out.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--per-image", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the best is reported")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        gt, res, n_gt, n_res = make_files(tmp, args.images, args.per_image)
        with open(os.path.join(tmp, "pycocotools_eval.py"), "w") as f:
            f.write(PYCOCOTOOLS)
        with open(os.path.join(tmp, "faster_eval.py"), "w") as f:
            f.write(FASTER)
        sides = {
            "tools/eval_coco.py --gt G --results R": [sys.executable, "tools/eval_coco.py", "--gt", gt, "--results", res,
                                                      "--output", os.path.join(tmp, "metrics.json")],
            "pycocotools script (5 lines)": [sys.executable, os.path.join(tmp, "pycocotools_eval.py"), gt, res],
            "faster-coco-eval script (5 lines)": [sys.executable, os.path.join(tmp, "faster_eval.py"), gt, res],
        }
        # A user's Python caches each module's bytecode on its first run (__pycache__); an environment
        # that forbids it (PYTHONDONTWRITEBYTECODE, set on some CI machines) would compile our modules
        # in every process while the installed libraries keep their caches. One untimed run of each
        # side writes the caches, then rounds interleave the sides so that load changes hit all three.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for cmd in sides.values():
            timed(cmd, env)
        runs = {name: [] for name in sides}
        for _ in range(args.repeat):
            for name, cmd in sides.items():
                runs[name].append(timed(cmd, env)[0])
        times = {name: min(t) for name, t in runs.items()}
        torch_check = subprocess.run(
            [sys.executable, "-c", "import runpy, sys, atexit; atexit.register(lambda: print('torch' in sys.modules)); "
             f"sys.argv = ['tools/eval_coco.py', '--gt', {gt!r}, '--results', {res!r}, '--output', "
             f"{os.path.join(tmp, 'm2.json')!r}]; runpy.run_path('tools/eval_coco.py', run_name='__main__')"],
            cwd=ROOT, env=env, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    print(f"{args.images} images, {n_gt} ground-truth boxes, {n_res} results; whole processes, best of "
          f"{args.repeat} interleaved rounds after a warm-up run; load average {load}; eval_coco.py imported torch: {torch_check}")
    ours = times["tools/eval_coco.py --gt G --results R"]
    for name, t in times.items():
        print(f"  {name:<40s} {t:6.3f} s   {t / ours:5.2f}x eval_coco.py's time")
    ratio = times["pycocotools script (5 lines)"] / ours
    print(f"eval_coco.py is {ratio:.2f}x faster than the pycocotools script (goal >= 3x): "
          f"{'holds' if ratio >= 3 else 'misses'}")


if __name__ == "__main__":
    main()
