"""Report every problem of a COCO-format dataset: ``--json J --images DIR [--max-examples N] [--report OUT]``.

Records are checked by the same code that cleans them for training and evaluation
(detection.annotations), so what it calls "dropped" is exactly what a run leaves out. Exit code 1
when training or evaluation would stop on the file (errors: missing or unreadable images, no usable
annotation, more than --max-dropped-fraction dropped); dropped records, warnings and notes alone: 0.
``--report OUT`` also writes OUT/index.html: per-class counts, object sizes and aspect ratios, a sample
of images with their annotations drawn, and every problem with the images it names (docs/reports.md).
"""
from __future__ import annotations

import argparse
import os
import sys

from detection.annotations import DEFAULT_MAX_DROPPED_FRACTION
from detection.dataset_check import check_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="COCO annotation file")
    parser.add_argument("--images", required=True, help="folder the file_name entries are relative to")
    parser.add_argument("--max-examples", type=int, default=5, help="examples printed per problem")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding images")
    parser.add_argument("--max-dropped-fraction", type=float, default=DEFAULT_MAX_DROPPED_FRACTION,
                        help="as training's data.max_dropped_fraction: more dropped annotations than this is an error")
    parser.add_argument("--report", metavar="DIR", help="also write an HTML report into DIR (DIR/index.html)")
    parser.add_argument("--report-samples", type=int, default=12, help="sample images drawn in the report")
    parser.add_argument("--report-max-mb", type=float, default=20.0,
                        help="the report's images stop at this many MB (thumbnails are left out past it)")
    args = parser.parse_args(argv)
    report = check_dataset(args.json, args.images, max_examples=args.max_examples, num_threads=args.threads,
                           max_dropped_fraction=args.max_dropped_fraction)
    print(report.format())
    if args.report:
        from detection.dataset_report import write_dataset_report

        print(f"report: {write_dataset_report(report, args.images, args.report, args.report_samples, args.report_max_mb)}")
    return 1 if report.has_errors else 0


if __name__ == "__main__":
    sys.exit(main())
