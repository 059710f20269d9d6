"""Generate the synthetic shapes dataset (COCO format): ``--out DIR [--num-train N --num-val M --size S --seed K]``.

Writes DIR/train.json, DIR/val.json and the images under DIR/train/, DIR/val/.
"""
from __future__ import annotations

import argparse
import sys
import time

from engine.shapes import SHAPE_KINDS
from detection.synthetic import DEFAULT_KINDS, make_shapes_dataset
from engine.cli import fail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="png", choices=["png", "jpg"], help="image file format")
    parser.add_argument("--max-shapes", type=int, default=5, help="most shapes in one image")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help=f"comma-separated classes from {', '.join(SHAPE_KINDS)}")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    start = time.time()
    try:
        splits = make_shapes_dataset(args.out, args.num_train, args.num_val, args.size, args.seed, args.format,
                                     args.max_shapes, kinds)
    except ValueError as e:
        fail(str(e))
    for split, (json_path, images_dir) in splits.items():
        print(f"{split}: {json_path} (images in {images_dir})")
    print(f"done in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
