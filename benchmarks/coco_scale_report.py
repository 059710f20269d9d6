"""The table benchmarks/coco_scale.py prints from its report (also: python coco_scale_report.py REPORT.json)."""
from __future__ import annotations

import json
import sys
from typing import List

MB = 1e6


def _mb(value) -> str:
    return "-" if value is None else f"{value / MB:,.0f} MB"


def _s(value) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def _train_lines(name: str, run: dict) -> List[str]:
    first, end = run.get("first") or {}, run.get("end") or {}
    lines = [f"  {name}: first iteration {_s(run.get('first_iteration_seconds'))} after launch; tree PSS peak "
             f"{_mb(run.get('peak_tree_pss'))}, after the first iteration {_mb(first.get('tree_pss'))}, "
             f"after {run['iters']} iterations {_mb(end.get('tree_pss'))} (mean of the last 10% of the "
             f"iterations: {_mb(run.get('end_window_mean_pss'))}, {run.get('end_window_samples', 0)} samples)"]
    for pid, r in sorted((end or first).get("ranks", {}).items()):
        lines.append(f"    rank pid {pid}: PSS {_mb(r['pss'])}, RSS {_mb(r['rss'])}, private {_mb(r.get('private'))}")
    growth = run.get("worker_private_growth") or {}
    for pid, w in sorted(first.get("workers", {}).items()):
        after = end.get("workers", {}).get(pid, {}).get("private") if end else None
        lines.append(f"    worker pid {pid}: private {_mb(w['private'])} at the first iteration, {_mb(after)} "
                     f"after {run['iters']} (growth {_mb(growth.get(str(pid)))})")
    for line in run.get("annotation_lines", []):
        lines.append(f"    log: {line[-160:]}")
    return lines


def format_report(report: dict) -> str:
    lines = [f"COCO at scale {report['scale']:g}: train json {_mb(report['json_bytes']['train'])}, "
             f"val json {_mb(report['json_bytes']['val'])}, results {_mb(report['json_bytes']['results'])}"]
    py, first, cached = (report.get(k) for k in ("parse_pycocotools", "parse_reskit_first", "parse_reskit_cached"))
    lines.append("parse (one process)                    seconds   peak RSS   RSS after imports")
    for label, r in (("pycocotools COCO()", py), ("reskit train set, first", first), ("reskit train set, cached", cached)):
        if r:
            lines.append(f"  {label:<34s} {r['seconds']:8.1f} {_mb(r['peak_rss']):>10s} {_mb(r['base_rss']):>12s}")
    if py and first and cached:
        lines.append(f"  reskit first / pycocotools: {first['seconds'] / py['seconds']:.2f}x time, "
                     f"{(first['peak_rss'] - first['base_rss']) / max(1, py['peak_rss'] - py['base_rss']):.2f}x "
                     f"memory above the imports; cached / pycocotools: {cached['seconds'] / py['seconds']:.3f}x time")
    train_keys = [k for k in report if k.startswith("train_")]
    if train_keys:
        lines.append("torchrun tools/train_det.py")
        for k in train_keys:
            lines += _train_lines(k, report[k])
        multi = [report[k] for k in train_keys if k.endswith("_first")]
        single = report.get("train_1x0")
        if multi and single and multi[0].get("end") and single.get("end"):
            gap = multi[0]["end"]["tree_pss"] - single["end"]["tree_pss"]
            lines.append(f"  goal: {multi[0]['ranks']} ranks x {multi[0]['workers']} workers <= 1 rank x 0 workers + 1 GB "
                         f"after {multi[0]['iters']} iterations: +{gap / MB:,.0f} MB "
                         f"({'met' if gap <= 1e9 else 'NOT met'})")
            a, b = multi[0].get("end_window_mean_pss"), single.get("end_window_mean_pss")
            if a and b:
                lines.append(f"  the same on the means of the last 10% of the iterations: +{(a - b) / MB:,.0f} MB "
                             f"({'met' if a - b <= 1e9 else 'NOT met'})")
    ev = report.get("evaluation")
    if ev:
        lines.append("evaluation of the val-sized results (whole process)   reskit eval_coco.py   pycocotools script")
        for iou_type, r in ev.items():
            lines.append(f"  {iou_type:<6s} seconds {r['reskit_seconds']:>39.1f} {r['pycocotools_seconds']:>20.1f}")
            lines.append(f"  {iou_type:<6s} AP      {r['reskit_AP']:>39.4f} {r['pycocotools_AP']:>20.4f}")
    scan = report.get("imagefolder")
    if scan:
        f, c, tv = scan["reskit_first"], scan["reskit_cached"], scan["torchvision"]
        lines.append(f"ImageFolder of {f['files']:,} files            seconds   memory above the imports")
        lines.append(f"  reskit, first scan (+ cache write) {f['seconds']:8.2f}   {_mb(f['peak_rss'] - f['base_rss'])} "
                     f"(index {_mb(f['index_bytes'])}, memory-mapped, one copy per machine)")
        lines.append(f"  reskit, cached                     {c['seconds']:8.2f}   {_mb(c['peak_rss'] - c['base_rss'])}")
        lines.append(f"  torchvision ImageFolder            {tv['seconds']:8.2f}   {_mb(tv['peak_rss'] - tv['base_rss'])} "
                     "(a list of (path, label) per process)")
        x = scan["extrapolated_to_imagenet (linear, not measured)"]
        lines.append(f"  extrapolated (linear, not measured) to {x['files']:,} files: reskit first "
                     f"{_s(x['reskit_first_seconds'])}, cached {_s(x['reskit_cached_seconds'])} (1,000 folders either way), torchvision "
                     f"{_s(x['torchvision_seconds'])}; index {_mb(x['reskit_index_bytes'])} vs a list of "
                     f"{_mb(x['torchvision_list_bytes'])} per process")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(format_report(json.load(f)))
