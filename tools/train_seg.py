"""Train a semantic segmentation model (FCN, DeepLabV3, semantic FPN), or evaluate a checkpoint.

    python tools/train_seg.py --config configs/segmentation/deeplabv3_R50_coco.yaml
    torchrun --nproc_per_node=8 tools/train_seg.py --config ... [--resume] [key.sub=value ...]
    python tools/train_seg.py --config ... --eval-only model.weights=runs/x/model_final.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.threads  # noqa: E402,F401  the thread policy's OMP_WAIT_POLICY, before torch starts

from engine.cli import default_argument_parser, parse_config  # noqa: E402
from engine.launch import run_tool  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from segmentation.config import SegConfig  # noqa: E402
from segmentation.task import SemanticSegmentationTask  # noqa: E402


def main(argv=None):
    args = default_argument_parser(__doc__.splitlines()[0]).parse_args(argv)
    # evaluation reads every weight from model.weights: the backbone file need not be there
    overrides = (["model.backbone.weights=null"] if args.eval_only else []) + list(args.overrides)
    cfg = parse_config(SegConfig, args.config, overrides, resume=args.resume and not args.eval_only)
    trainer = Trainer(cfg, SemanticSegmentationTask(cfg, training=not args.eval_only))
    if args.eval_only:
        if not cfg.model.weights:
            raise FileNotFoundError("--eval-only needs model.weights=PATH (a segmentation checkpoint)")
        return trainer.evaluate_only(cfg.model.weights)
    return trainer.train(resume=args.resume, allow_config_change=args.allow_config_change)


if __name__ == "__main__":
    run_tool(main)
