"""Report every problem of a COCO-format dataset: ``--json J --images DIR [--max-examples N]``.

Exit code 1 when it found errors (warnings alone, such as boxes that get clipped: 0).
"""
from __future__ import annotations

import argparse
import sys

from detection.dataset_check import check_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="COCO annotation file")
    parser.add_argument("--images", required=True, help="folder the file_name entries are relative to")
    parser.add_argument("--max-examples", type=int, default=5, help="examples printed per problem")
    parser.add_argument("--threads", type=int, default=8, help="threads decoding images")
    args = parser.parse_args(argv)
    report = check_dataset(args.json, args.images, max_examples=args.max_examples, num_threads=args.threads)
    print(report.format())
    return 1 if report.has_errors else 0


if __name__ == "__main__":
    sys.exit(main())
