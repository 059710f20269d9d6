"""COCO at full size: parse time and memory, a torchrun start, evaluation, an ImageNet-sized scan.

    PYTHONPATH=. python benchmarks/coco_scale.py [--scale 1.0] [--iters 200] [--out runs/coco_scale]
                                                  [--skip-train] [--skip-eval] [--skip-scan]

Makes (benchmarks/coco_scale_data.py, once per --out and --scale) a train2017-sized COCO json
(118,287 images, ~860k annotations, ~7 an image, COCO-like polygons, 1% crowd RLE, COCO's 80
category ids), a val2017-sized one (5,000 images, ~36k annotations), a results file of 100
detections an image (500,000, bbox + RLE segm) and an ImageFolder tree of 200,000 links, all scaled
by --scale; image files are a few generated JPEGs linked under every name. Then, in one run, side by
side with pycocotools on the same files:

1. parse: pycocotools' ``COCO(json)`` and reskit's training set (``DetectionTask.train_dataset()``,
   the path train_det.py takes), each in its own process: seconds and peak RSS (ru_maxrss, with
   the RSS after the imports beside it); reskit twice: the first parse, then a cached start;
2. ``torchrun --nproc_per_node=2 tools/train_det.py`` (configs/detection/mask_rcnn_R50_FPN_1x.yaml,
   ResNet-18 at --size px with light heads, 4 loader workers a rank, so that the data path and not the network
   costs): seconds from launch to the first logged iteration, the summed PSS of the whole process
   tree (torchrun's agent, the ranks, their workers; /proc/<pid>/smaps_rollup) at its peak and
   after --iters iterations, each worker's private memory after the first iteration and after
   --iters; a second (cached) start; the same with 1 rank and 0 workers (the "+1 GB" goal);
3. ``tools/eval_coco.py`` on the val-sized results, bbox and segm, whole process, against a
   pycocotools script (COCO, loadRes, COCOeval), whole process, with both APs;
4. an ImageFolder scan of the generated tree: reskit's first scan and cached start against
   torchvision's ``ImageFolder``, and a linear extrapolation to ImageNet's 1,281,167 files.

Prints a table and writes --out/coco_scale.json. The machine's other load inflates every time:
compare the columns of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

import coco_scale_data as data  # noqa: E402
from proc_tree import tree_memory  # noqa: E402

PY = sys.executable
CONFIG = "configs/detection/mask_rcnn_R50_FPN_1x.yaml"
IMAGENET_FILES = 1281167
MB = 1e6

# Each measurement runs in a process of its own. After the imports it resets the peak RSS (writing 5
# to /proc/self/clear_refs resets VmHWM, Linux >= 4.0) and reads the RSS then ("base_rss"), so that
# "peak_rss" is the peak of the work itself, not of importing torch.
_MEASURE = """import json, sys, time
sys.path.insert(0, {root!r})
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")
"""
# The peak of this process or of a child it waited for (engine.cache builds an entry in a forked
# child: its peak is the parse's).
_RSS = ('max(_status("VmHWM"), __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)'
        '.ru_maxrss * 1024)')

PARSE_PYCOCOTOOLS = _MEASURE + """import contextlib, io
from pycocotools.coco import COCO
base = _reset_peak()
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO({json!r})
print(json.dumps({{"seconds": time.perf_counter() - t, "base_rss": base, "peak_rss": {rss},
                  "images": len(coco.imgs), "annotations": len(coco.anns)}}))
"""

PARSE_RESKIT = _MEASURE + """from detection.config import DetConfig
from detection.task import DetectionTask
from engine.config import load_config
cfg = load_config(DetConfig, {config!r}, {overrides!r})
base = _reset_peak()
t = time.perf_counter()
train = DetectionTask(cfg).train_dataset()
print(json.dumps({{"seconds": time.perf_counter() - t, "base_rss": base, "peak_rss": {rss}, "images": len(train)}}))
"""

EVAL_PYCOCOTOOLS = _MEASURE + """import contextlib, io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO({gt!r})
    records = json.load(open({results!r}))
    if {iou_type!r} == "segm":  # as detectron2: the box area would replace the mask area
        for r in records:
            r.pop("bbox", None)
    evaluator = COCOeval(gt, gt.loadRes(records), {iou_type!r})
    evaluator.evaluate(); evaluator.accumulate(); evaluator.summarize()
print(json.dumps({{"AP": evaluator.stats[0] * 100, "peak_rss": {rss}}}))
"""

SCAN_RESKIT = _MEASURE + """from classification.folder_index import load_folder_index
base = _reset_peak()
t = time.perf_counter()
index = load_folder_index({root_dir!r})
print(json.dumps({{"seconds": time.perf_counter() - t, "base_rss": base, "peak_rss": {rss}, "files": len(index),
                  "hit": index.entry.hit, "index_bytes": index.entry.nbytes}}))
"""

SCAN_TORCHVISION = _MEASURE + """from torchvision.datasets import ImageFolder
base = _reset_peak()
t = time.perf_counter()
ds = ImageFolder({root_dir!r}, loader=lambda p: p)
print(json.dumps({{"seconds": time.perf_counter() - t, "base_rss": base, "peak_rss": {rss}, "files": len(ds)}}))
"""


def snippet(template: str, env: dict, **kwargs) -> dict:
    """Run a measuring snippet in its own process; its last stdout line is a json dict."""
    code = template.format(root=ROOT, rss=_RSS, **kwargs)
    t = time.perf_counter()
    done = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measurement failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t
    return out


def make_data(out: str, scale: float, log) -> Dict[str, str]:
    folder = os.path.join(out, f"data_{scale:g}")
    os.makedirs(folder, exist_ok=True)
    paths = {"train": os.path.join(folder, "instances_train.json"), "val": os.path.join(folder, "instances_val.json"),
             "results": os.path.join(folder, "detections_val.json"),
             "images_train": os.path.join(folder, "images", "train"), "images_val": os.path.join(folder, "images", "val"),
             "imagefolder": os.path.join(folder, "imagefolder"),
             "val_tiny": os.path.join(folder, "instances_val_16.json")}
    for split, n in (("train", data.TRAIN_IMAGES), ("val", data.VAL_IMAGES)):
        if not os.path.isfile(paths[split]):
            t = time.perf_counter()
            c = data.write_coco_json(paths[split], max(1, round(n * scale)), seed=0 if split == "train" else 1)
            log(f"wrote {paths[split]}: {c['images']:,} images, {c['annotations']:,} annotations "
                f"({c['crowd']:,} crowd), {c['bytes'] / MB:.0f} MB in {time.perf_counter() - t:.0f} s")
        made = data.write_image_links(paths[split], paths["images_" + split], os.path.join(folder, "base"))
        if made:
            log(f"linked {made:,} image files for {split}")
    if not os.path.isfile(paths["results"]):
        t = time.perf_counter()
        n = data.write_results(paths["val"], paths["results"])
        log(f"wrote {paths['results']}: {n:,} detections in {time.perf_counter() - t:.0f} s")
    per_class = max(1, round(200 * scale))
    bases = sorted(os.path.join(folder, "base", f) for f in os.listdir(os.path.join(folder, "base")))
    made = data.write_image_folder(paths["imagefolder"], bases, 1000, per_class)
    if made:
        log(f"linked {made:,} files into {paths['imagefolder']} (1,000 classes x {per_class})")
    if not os.path.isfile(paths["val_tiny"]):  # the training runs' final evaluation: 16 images
        with open(paths["val"]) as f:
            val = json.load(f)
        keep = {img["id"] for img in val["images"][:16]}
        val["images"] = [img for img in val["images"] if img["id"] in keep]
        val["annotations"] = [a for a in val["annotations"] if a["image_id"] in keep]
        with open(paths["val_tiny"], "w") as f:
            json.dump(val, f)
    paths["bytes"] = {split: os.path.getsize(paths[split]) for split in ("train", "val", "results")}
    return paths


def train_overrides(paths: dict, out_dir: str, ranks: int, workers: int, iters: int, size: int) -> List[str]:
    return [f"output_dir={out_dir}", f"data.train.0.json={paths['train']}", f"data.train.0.images={paths['images_train']}",
            f"data.val.0.json={paths['val_tiny']}", f"data.val.0.images={paths['images_val']}",
            f"data.num_workers={workers}", "test.ims_per_batch=2", f"input.min_size_test={size}",
            f"input.max_size_test={size * 5 // 3}", "model.backbone.name=resnet18",
            "model.backbone.weights=null", f"input.min_size_train=[{size}]", f"input.max_size_train={size * 5 // 3}",
            # light heads, so that an iteration costs little beside the data path it measures
            "model.fpn_channels=64", "model.rpn.pre_nms_topk_train=300", "model.rpn.post_nms_topk_train=100",
            "model.roi_heads.batch_size_per_image=64", "model.roi_heads.fc_dim=256",
            "model.roi_heads.mask_head_dim=64", "model.roi_heads.mask_head_convs=1",
            f"solver.ims_per_batch={2 * ranks}", f"solver.reference_batch={2 * ranks}", "solver.base_lr=0.002",
            f"solver.max_iter={iters}", "solver.warmup_iters=10", "solver.checkpoint_period=1000000",
            "logging.log_period=1", "logging.tensorboard=false", "logging.progress_bar=false"]


def _last_iteration(path: str) -> int:
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("iter", 0))
        except (ValueError, AttributeError):
            continue
    return 0


def _snapshot(memory: dict) -> dict:
    procs = memory["processes"]
    return {"tree_pss": memory["pss"],
            "ranks": {pid: {"pss": p["Pss"], "rss": p["Rss"], "private": p["Private"]}
                      for pid, p in procs.items() if p["depth"] == 1},
            "workers": {pid: {"pss": p["Pss"], "private": p["Private"], "rank": p["parent"]}
                        for pid, p in procs.items() if p["depth"] == 2}}


def train_run(name: str, paths: dict, out: str, env: dict, ranks: int, workers: int, iters: int, size: int,
              log, timeout: float = 7200) -> dict:
    """One torchrun of train_det.py, its process tree sampled every 0.5 s."""
    run_dir = os.path.join(out, "runs", name)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "tools/train_det.py",
           "--config", CONFIG, *train_overrides(paths, run_dir, ranks, workers, iters + 2, size)]
    log(f"{name}: {' '.join(cmd[1:])}")
    metrics = os.path.join(run_dir, "metrics.jsonl")
    start = time.monotonic()
    with open(os.path.join(out, f"{name}.log"), "wb") as console:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
        result = {"command": " ".join(cmd[1:]), "ranks": ranks, "workers": workers, "iters": iters}
        peak, first, end = 0, None, None
        window = []  # the tree's PSS over the last 10% of the iterations: one snapshot lands at a random
        # moment of an iteration, and a rank's heap swings by a few hundred MB within one
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"{name}: no end after {timeout:.0f} s")
                memory = tree_memory(proc.pid)
                peak = max(peak, memory["pss"])
                it = _last_iteration(metrics)
                if first is None and it >= 1:
                    first = _snapshot(memory)
                    result["first_iteration_seconds"] = time.monotonic() - start
                if it >= iters - max(1, iters // 10) and end is None:
                    window.append(memory["pss"])
                if end is None and it >= iters:
                    end = _snapshot(memory)
                    result["iters_seconds"] = time.monotonic() - start
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
    if proc.returncode:
        raise RuntimeError(f"{name}: exit {proc.returncode}; see {os.path.join(out, name + '.log')}")
    result.update(peak_tree_pss=peak, first=first, end=end,
                  end_window_mean_pss=sum(window) / len(window) if window else None, end_window_samples=len(window))
    if first and end:
        result["worker_private_growth"] = {str(pid): end["workers"][pid]["private"] - w["private"]
                                           for pid, w in first["workers"].items() if pid in end["workers"]}
    with open(os.path.join(out, f"{name}.log"), "rb") as f:
        result["annotation_lines"] = [line.decode("utf-8", "replace").strip() for line in f
                                      if b"annotations" in line][:4]
    return result


def timed_process(cmd: List[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def evaluation(paths: dict, out: str, env: dict) -> dict:
    result = {}
    for iou_type in ("bbox", "segm"):
        output = os.path.join(out, f"eval_{iou_type}.json")
        cmd = [PY, "tools/eval_coco.py", "--gt", paths["val"], "--results", paths["results"],
               "--iou-type", iou_type, "--output", output]
        seconds = timed_process(cmd, env)
        with open(output) as f:
            ours = json.load(f)[iou_type]["AP"]
        reference = snippet(EVAL_PYCOCOTOOLS, env, gt=paths["val"], results=paths["results"], iou_type=iou_type)
        result[iou_type] = {"reskit_seconds": seconds, "reskit_AP": ours, "command": " ".join(cmd[1:]),
                            "pycocotools_seconds": reference["process_seconds"], "pycocotools_AP": reference["AP"]}
    return result


def folder_scan(paths: dict, env: dict, cache: str) -> dict:
    shutil.rmtree(os.path.join(cache, "imagefolder"), ignore_errors=True)
    first = snippet(SCAN_RESKIT, env, root_dir=paths["imagefolder"])
    cached = snippet(SCAN_RESKIT, env, root_dir=paths["imagefolder"])
    tv = snippet(SCAN_TORCHVISION, env, root_dir=paths["imagefolder"])
    k = IMAGENET_FILES / first["files"]
    # a cached start stats the folders, not the files: ImageNet has 1,000 class folders too, so
    # its cached time is the measured one
    extrapolated = {"files": IMAGENET_FILES, "reskit_first_seconds": first["seconds"] * k,
                    "reskit_cached_seconds": cached["seconds"], "torchvision_seconds": tv["seconds"] * k,
                    "reskit_index_bytes": first["index_bytes"] * k,
                    "torchvision_list_bytes": (tv["peak_rss"] - tv["base_rss"]) * k}
    return {"reskit_first": first, "reskit_cached": cached, "torchvision": tv,
            "extrapolated_to_imagenet (linear, not measured)": extrapolated}


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's sizes (0.05 for a quick run)")
    parser.add_argument("--iters", type=int, default=200, help="training iterations measured (issue: 1000)")
    parser.add_argument("--size", type=int, default=320, help="training image size (shorter side)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="loader workers a rank")
    parser.add_argument("--out", default="runs/coco_scale")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-scan", action="store_true")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, "cache")
    env = dict(os.environ, PYTHONPATH=ROOT, RESKIT_CACHE=cache)

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    paths = make_data(out, args.scale, log)
    report: dict = {"scale": args.scale, "files": {k: v for k, v in paths.items() if k != "bytes"},
                    "json_bytes": paths["bytes"]}
    train_args = train_overrides(paths, "/tmp/unused", 1, 0, 1, args.size)
    log("parse: pycocotools COCO()")
    report["parse_pycocotools"] = snippet(PARSE_PYCOCOTOOLS, env, json=paths["train"])
    shutil.rmtree(cache, ignore_errors=True)
    log("parse: reskit, first (no cache)")
    report["parse_reskit_first"] = snippet(PARSE_RESKIT, env, config=CONFIG, overrides=train_args)
    log("parse: reskit, cached")
    report["parse_reskit_cached"] = snippet(PARSE_RESKIT, env, config=CONFIG, overrides=train_args)
    if not args.skip_train:
        shutil.rmtree(cache, ignore_errors=True)
        name = f"train_{args.ranks}x{args.workers}"
        report[name + "_first"] = train_run(name + "_first", paths, out, env, args.ranks, args.workers,
                                            args.iters, args.size, log)
        report[name + "_cached"] = train_run(name + "_cached", paths, out, env, args.ranks, args.workers,
                                             3, args.size, log)
        report["train_1x0"] = train_run("train_1x0", paths, out, env, 1, 0, args.iters, args.size, log)
    if not args.skip_eval:
        log("evaluation: eval_coco.py and pycocotools, bbox and segm")
        report["evaluation"] = evaluation(paths, out, env)
    if not args.skip_scan:
        log("ImageFolder scan")
        report["imagefolder"] = folder_scan(paths, env, cache)
    with open(os.path.join(out, "coco_scale.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    from coco_scale_report import format_report

    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
