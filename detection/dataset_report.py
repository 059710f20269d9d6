"""The dataset report: ``tools/check_dataset.py --json J --images DIR --report OUT`` writes OUT/index.html.

What a COCO-format dataset holds (per-class instances and images, object sizes with COCO's small /
medium / large ranges, box aspect ratios, annotations per image), a sample of its images with the
annotations drawn, and every problem :func:`detection.dataset_check.check_dataset` found, with the
images its examples name. The numbers are :mod:`detection.dataset_stats` over the records training
would use (the checker's cleaned data); the page is an :class:`engine.report.Report`. No torch here.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np

from engine.data import DataError
from engine.report import DEFAULT_MAX_MB, Report, figure

from .coco import read_coco_image
from .dataset_check import ONE_LINE, PROBLEMS, SEVERITIES, DatasetReport
from .dataset_stats import MEDIUM, SMALL, affected_images, annotation_statistics, draw_annotations, sample_images

__all__ = ["write_dataset_report"]

THUMB = 480  # longest side of a drawn image (the report's gallery size)


def _size_figure(stats: dict):
    """Histogram of sqrt(area) on a log axis, COCO's three ranges shaded and counted in the legend."""
    fig, ax = figure(6.4, 3.4)
    sides = np.sqrt(np.maximum(stats["areas"], 0))
    sides = sides[sides > 0]
    # the three ranges always in view: from at most 8 px to at least 128 px
    lo, hi = (min(8.0, max(1.0, sides.min() * 0.9)), max(sides.max() * 1.1, 128.0)) if len(sides) else (1.0, 1024.0)
    sizes, total = stats["sizes"], max(1, len(stats["areas"]))
    for (a, b), name, colour in (((lo, 32), "small", "#fdd0a2"), ((32, 96), "medium", "#c6dbef"),
                                 ((96, hi), "large", "#c7e9c0")):
        ax.axvspan(a, b, color=colour, alpha=0.6, lw=0,
                   label=f"{name}: {sizes[name]} ({100 * sizes[name] / total:.0f}%)")
    if len(sides):
        ax.hist(sides, bins=np.geomspace(lo, hi, 40), color="#4c78a8")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("object size: sqrt(area) in pixels (COCO: small < 32 <= medium < 96 <= large)")
    ax.set_ylabel("annotations")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _aspect_figure(stats: dict):
    """Histogram of box width / height on a log2 axis (the extreme 0.5% gathered in the end bins)."""
    fig, ax = figure(6.4, 3.4)
    w, h = stats["widths"], stats["heights"]
    ok = (w > 0) & (h > 0)
    ratios = np.log2(w[ok] / h[ok])
    if len(ratios):
        span = max(2.0, float(np.ceil(np.percentile(np.abs(ratios), 99.5))))
        ax.hist(np.clip(ratios, -span, span), bins=np.linspace(-span, span, 41), color="#72b7b2")
        ticks = np.arange(-span, span + 1)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"1:{2 ** -t:g}" if t < 0 else f"{2 ** t:g}:1" for t in ticks], fontsize=8)
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_xlabel("box aspect ratio, width : height (log scale)")
    ax.set_ylabel("annotations")
    fig.tight_layout()
    return fig


def _classes_figure(stats: dict):
    """Horizontal bars: instances and images per class (rarest at the bottom)."""
    classes = sorted(stats["classes"], key=lambda c: c["instances"])
    shown = classes[-40:]  # a readable chart; the table above has every class
    fig, ax = figure(6.4, max(2.2, 0.22 * len(shown) + 0.9))
    y = np.arange(len(shown))
    ax.barh(y - 0.2, [c["instances"] for c in shown], height=0.4, label="instances", color="#4c78a8")
    ax.barh(y + 0.2, [c["images"] for c in shown], height=0.4, label="images", color="#f58518")
    ax.set_yticks(y)
    ax.set_yticklabels([c["name"] for c in shown], fontsize=8)
    ax.set_xlabel("count" + (f" (the {len(shown)} most frequent of {len(classes)} classes)"
                             if len(shown) < len(classes) else ""))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _short(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters with an ellipsis in the middle (file names are long, unbroken)."""
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n - n // 2):]


def _read(images_dir: str, img: dict) -> Optional[np.ndarray]:
    try:
        return read_coco_image(os.path.join(images_dir, img["file_name"]), img["id"])
    except DataError:
        return None


def _problems_section(report: Report, check: DatasetReport, data: dict, images_dir: str, names: Dict[int, str],
                      anns_of: Dict[int, List[dict]]) -> None:
    images = {img["id"]: img for img in data["images"]}
    found = [code for code in PROBLEMS if check.counts[code]]
    report.section("Problems")
    if not found:
        report.text("The checker found no problem: every record is used as it is.")
        return
    report.table(["problem", "severity", "count"], [[c, PROBLEMS[c][0], int(check.counts[c])] for c in found],
                 caption="Errors stop training and evaluation; dropped and repaired records are left out or fixed "
                         "the same way by both; warnings and notes are handled but worth knowing.")
    for code in found:
        severity, meaning = PROBLEMS[code]
        report.heading(f"{severity}: {code} ({check.counts[code]})")
        report.text(meaning, "note")
        examples = check.examples.get(code, [])
        if code in ONE_LINE or not examples:
            continue
        more = check.counts[code] - len(examples)
        report.pre("\n".join(examples) + (f"\n... and {more} more (--max-examples shows more)" if more > 0 else ""))
        by_image: Dict[int, List[dict]] = defaultdict(list)  # one picture per image, every named record on it
        for hit in affected_images(code, examples, data):
            by_image[hit["image_id"]].append(hit)
        items = []
        for image_id, hits in by_image.items():
            img = images[image_id]
            pixels = _read(images_dir, img)
            if pixels is None:
                continue
            kept = {a["id"] for a in anns_of.get(image_id, [])}
            named = {h["annotation_id"] for h in hits if h["annotation_id"] is not None}
            dropped = [h["bbox"] for h in hits if h["bbox"] is not None and h["annotation_id"] not in kept]
            drawn = draw_annotations(pixels, anns_of.get(image_id, []), names, THUMB,
                                     (named & kept) if named else None, dropped)
            what = (f"annotation{'s' if len(named) > 1 else ''} {', '.join(str(i) for i in sorted(named))}"
                    if named else f"{len(hits)} record{'s' if len(hits) > 1 else ''}")
            items.append((drawn, _short(f"image id {image_id}: {what} ({img['file_name']})", 90)))
        if items:
            report.gallery(items)


def write_dataset_report(check: DatasetReport, images_dir: str, directory: str, num_samples: int = 12,
                         max_mb: float = DEFAULT_MAX_MB) -> str:
    """Write the dataset report of ``check`` (a :class:`DatasetReport` of ``images_dir``) into
    ``directory``; returns the path of its index.html."""
    parts = os.path.abspath(check.json_path).split(os.sep)
    title = "Dataset check: " + "/".join(parts[-3:])
    report = Report(directory, title, subtitle=f"{os.path.abspath(check.json_path)}, images in "
                                                f"{os.path.abspath(images_dir)}",
                    max_mb=max_mb, limit_hint="tools/check_dataset.py --report-max-mb")
    counts = {sev: check.count(sev) for sev in SEVERITIES}
    verdict = ("training and evaluation would stop: fix the errors" if counts["error"] else
               "usable: training and evaluation leave out or repair the records listed"
               if counts["dropped"] or counts["repaired"] else "the dataset is usable")
    report.section("Summary")
    report.table(["in the file", "count"], list(check.summary.items()), sortable=False)
    plural = {"error": "errors", "warning": "warnings", "note": "notes"}
    report.text(", ".join(f"{n} {sev if n == 1 else plural.get(sev, sev)}" for sev, n in counts.items())
                + f": {verdict}",
                "warn" if counts["error"] else "")
    cleaning = check.cleaning
    if cleaning is None or getattr(cleaning, "data", None) is None:
        report.text("The annotation file could not be read, so there is nothing to count: see Problems.", "warn")
        _problems_section(report, check, {"images": [], "annotations": [], "categories": []}, images_dir, {}, {})
        return report.write()
    data = cleaning.data
    stats = annotation_statistics(data)
    names = {c["id"]: c["name"] for c in stats["classes"]}
    report.text(f"Counted over the records training and evaluation use: {len(data['images'])} images, "
                f"{len(data['annotations'])} annotations ({sum(c['crowd'] for c in stats['classes'])} crowd), "
                f"{len(data['categories'])} categories; {stats['empty_images']} images without annotations.",
                "note")

    report.section("Classes")
    report.table(["class", "id", "instances", "images", "crowd", "small", "medium", "large"],
                 [[c["name"], c["id"], c["instances"], c["images"], c["crowd"], c["small"], c["medium"], c["large"]]
                  for c in stats["classes"]],
                 caption="Non-crowd instances per category, the images holding them, crowd regions, and COCO's size "
                         "ranges by annotation area (click a column to sort).")
    if stats["classes"]:
        report.image(_classes_figure(stats), "instances and images per class")

    report.section("Object sizes and shapes")
    sizes, total = stats["sizes"], max(1, len(stats["areas"]))
    report.text(f"COCO's ranges over {len(stats['areas'])} non-crowd annotations: "
                f"small (area < {SMALL}) {sizes['small']} ({100 * sizes['small'] / total:.0f}%), "
                f"medium {sizes['medium']} ({100 * sizes['medium'] / total:.0f}%), "
                f"large (area >= {MEDIUM}) {sizes['large']} ({100 * sizes['large'] / total:.0f}%). "
                "APs, APm and APl are averaged over these.", "note")
    report.image(_size_figure(stats), "object sizes with COCO's small / medium / large ranges")
    report.image(_aspect_figure(stats), "box aspect ratios")
    per_image = stats["per_image"]
    if len(per_image):
        report.text(f"Annotations per image: min {per_image.min()}, median {np.median(per_image):g}, "
                    f"mean {per_image.mean():.1f}, max {per_image.max()}.", "note")

    anns_of: Dict[int, List[dict]] = defaultdict(list)
    for a in data["annotations"]:
        anns_of[a["image_id"]].append(a)
    images = {img["id"]: img for img in data["images"]}
    report.section("Sample images")
    report.text("Chosen to show every class at least once (rarest first), then spread over the file; polygons "
                "filled, boxes outlined, one colour per class.", "note")
    items = []
    chosen = sample_images(data, num_samples)
    for image_id in chosen + sorted(set(images) - set(chosen)):  # an unreadable one is replaced by the next
        if len(items) >= num_samples:
            break
        img = images[image_id]
        pixels = _read(images_dir, img)
        if pixels is None:
            continue  # missing or unreadable: listed under Problems
        drawn = draw_annotations(pixels, anns_of.get(image_id, []), names, THUMB)
        n = len(anns_of.get(image_id, []))
        items.append((drawn, f"image id {image_id}: {_short(img['file_name'], 48)} ({n} annotation{'s' * (n != 1)})"))
    if items:
        report.gallery(items)
    else:
        report.text("No image could be read.", "warn")

    _problems_section(report, check, data, images_dir, names, anns_of)
    return report.write()
