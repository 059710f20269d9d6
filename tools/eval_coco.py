"""Evaluate COCO results: ``--gt G.json --results R.json --iou-type bbox|segm [--output OUT.json]``.

Prints the 12 COCO numbers and the per-category AP table, writes them in percent to OUT.json
(default: results.json beside the results file). Bad input: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from detection.evaluation import BACKENDS, evaluate_results_file, format_table
from engine.cli import fail
from engine.data import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", metavar="G.json", help="ground-truth COCO annotation file")
    parser.add_argument("--results", metavar="R.json", help="results file (the format COCO.loadRes reads)")
    parser.add_argument("--iou-type", default="bbox", choices=["bbox", "segm"])
    parser.add_argument("--output", metavar="OUT.json", help="metrics file (default: results.json beside R.json)")
    parser.add_argument("--backend", default="faster_coco_eval", choices=list(BACKENDS))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.gt and args.results):
        fail("give --gt G.json --results R.json")
    try:
        metrics = evaluate_results_file(args.gt, args.results, args.iou_type, args.backend, args.output)
    except DataError as e:
        fail(str(e))
    print(format_table(metrics), end="")
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.results)), "results.json")
    print(f"metrics written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
