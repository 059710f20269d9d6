"""The end-to-end demo on built-in synthetic data (what `make demo` runs).

    python tools/demo.py [--out runs/demo] [--quick]

1. tools/make_shapes.py    a synthetic COCO dataset of shapes (train/val, polygon masks)
2. tools/train_cls.py      pretrain a ResNet-18 on shape classification
3. tools/transfer.py       turn the classifier into backbone weights
4. tools/train_det.py      Mask R-CNN (R18-FPN) from those weights: box AP and mask AP
5. tools/train_seg.py      a semantic FPN head from the Mask R-CNN's backbone and FPN: mIoU
6. tools/predict.py        draw predictions on validation images

Each stage is the command a user would type, printed before it runs. The numbers land in
OUT/results.json and a report with the AP tables and pictures in OUT/report.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def run(stage: str, cmd: list, timings: dict) -> None:
    print(f"\n== {stage}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    timings[stage] = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"demo stage '{stage}' failed (exit {result.returncode}); see the output above")
    print(f"-- {stage}: {timings[stage]:.0f} s", flush=True)


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fmt(v) -> str:
    return "nan" if v is None else f"{v:.1f}"


def write_report(out: str, results: dict, timings: dict, pictures: list) -> str:
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    lines = ["# reskit demo report", "",
             "Synthetic shapes (tools/make_shapes.py), ResNet-18 pretrained on shape classification, "
             "then Mask R-CNN (FPN) and a semantic FPN head. Numbers in percent on the validation split.", "",
             f"- classification top-1: {fmt(results['classification'].get('top1'))}",
             f"- box AP: {fmt(results['bbox'].get('AP'))}",
             f"- mask AP: {fmt(results['segm'].get('AP'))}",
             f"- semantic mIoU: {fmt(results['sem_seg'].get('mIoU'))}", ""]
    for iou_type in ("bbox", "segm"):
        lines += [f"## {iou_type} AP", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                  "| " + " | ".join(fmt(results[iou_type].get(k)) for k in keys) + " |", ""]
        per_cat = results.get(f"{iou_type}_per_category", {})
        if per_cat:
            lines += ["| category | AP |", "|---|---|"] + [f"| {n} | {fmt(v)} |" for n, v in per_cat.items()] + [""]
    per_class = results["sem_seg"].get("per_class_IoU", {})
    if per_class:
        lines += ["## semantic IoU per class", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {n} | {fmt(v)} |" for n, v in per_class.items()] + [""]
    lines += ["## time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    lines += ["## predictions", ""] + [f"![{os.path.basename(p)}]({os.path.relpath(p, out)})" for p in pictures]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="a few iterations per stage (smoke test)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        shutil.rmtree(out)  # the demo always starts fresh
    os.makedirs(out)
    data = os.path.join(out, "data")
    timings: dict = {}
    total = time.perf_counter()
    quick = {"cls": ["solver.max_iter=4", "data.train.0.synthetic.num_images=64",
                     "data.val.0.synthetic.num_images=32"],
             "det": ["solver.max_iter=4", "solver.steps=[3]", "solver.warmup_iters=1"],
             "seg": ["solver.max_iter=4", "solver.warmup_iters=1"]} if args.quick else {}
    n_train, n_val = ("48", "16") if args.quick else ("600", "100")

    run("make data", [PY, "tools/make_shapes.py", "--out", data, "--num-train", n_train,
                      "--num-val", n_val, "--size", "128", "--seed", "0"], timings)
    run("pretrain classifier", [PY, "tools/train_cls.py", "--config", "configs/demo/shapes_cls.yaml",
                                f"output_dir={out}/cls", *quick.get("cls", [])], timings)
    backbone = os.path.join(out, "resnet18_backbone.pth")
    run("transfer", [PY, "tools/transfer.py", f"{out}/cls/model_final.pth", "--out", backbone], timings)
    coco = [f"data.train.0.json={data}/train.json", f"data.train.0.images={data}/train",
            f"data.val.0.json={data}/val.json", f"data.val.0.images={data}/val"]
    run("train Mask R-CNN", [PY, "tools/train_det.py", "--config", "configs/demo/shapes_mask_rcnn.yaml",
                             f"output_dir={out}/mask_rcnn", f"model.backbone.weights={backbone}",
                             *coco, *quick.get("det", [])], timings)
    seg_data = [f"data.train.0.coco.json={data}/train.json", f"data.train.0.coco.images={data}/train",
                f"data.val.0.coco.json={data}/val.json", f"data.val.0.coco.images={data}/val"]
    run("train semantic FPN", [PY, "tools/train_seg.py", "--config", "configs/demo/shapes_semantic.yaml",
                               f"output_dir={out}/semantic", f"model.weights={out}/mask_rcnn/model_final.pth",
                               *seg_data, *quick.get("seg", [])], timings)
    samples = os.path.join(out, "samples")
    os.makedirs(samples)
    for name in sorted(os.listdir(os.path.join(data, "val")))[:6]:
        shutil.copy(os.path.join(data, "val", name), samples)
    run("predict", [PY, "tools/predict.py", "--config", "configs/demo/shapes_mask_rcnn.yaml",
                    "--weights", f"{out}/mask_rcnn/model_final.pth", "--input", samples,
                    "--output", f"{out}/predictions"], timings)

    det = load(f"{out}/mask_rcnn/results.json")
    results = {"classification": load(f"{out}/cls/results.json"), "bbox": det["bbox"], "segm": det["segm"],
               "bbox_per_category": det.get("bbox_per_category", {}),
               "segm_per_category": det.get("segm_per_category", {}),
               "sem_seg": load(f"{out}/semantic/results.json")["sem_seg"]}
    timings["total"] = time.perf_counter() - total
    results["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    pictures = sorted(os.path.join(out, "predictions", p) for p in os.listdir(f"{out}/predictions")
                      if p.endswith(".png"))
    report = write_report(out, results, timings, pictures)
    print(f"\nbox AP {fmt(results['bbox'].get('AP'))}  mask AP {fmt(results['segm'].get('AP'))}  "
          f"mIoU {fmt(results['sem_seg'].get('mIoU'))}  top-1 {fmt(results['classification'].get('top1'))}"
          f"  in {timings['total'] / 60:.1f} min")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
