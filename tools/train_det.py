"""Train Faster R-CNN or Mask R-CNN (C4 or FPN) on COCO-format data, or evaluate a checkpoint.

    python tools/train_det.py --config configs/detection/faster_rcnn_R50_FPN_1x.yaml
    torchrun --nproc_per_node=8 tools/train_det.py --config ... [--resume] [key.sub=value ...]
    python tools/train_det.py --config ... --eval-only model.weights=runs/x/model_final.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.threads  # noqa: E402,F401  the thread policy's OMP_WAIT_POLICY, before torch starts

from detection.config import DetConfig  # noqa: E402
from detection.task import DetectionTask  # noqa: E402
from engine.cli import default_argument_parser, parse_config  # noqa: E402
from engine.launch import run_tool  # noqa: E402
from engine.trainer import Trainer  # noqa: E402


def main():
    args = default_argument_parser(__doc__.splitlines()[0]).parse_args()
    # evaluation reads every weight from the checkpoint: the backbone's starting weights need not be there
    overrides = (["model.backbone.weights=null"] if args.eval_only else []) + list(args.overrides)
    cfg = parse_config(DetConfig, args.config, overrides, resume=args.resume and not args.eval_only)
    trainer = Trainer(cfg, DetectionTask(cfg, training=not args.eval_only))
    if args.eval_only:
        if not cfg.model.weights:
            raise FileNotFoundError("--eval-only needs model.weights=PATH (a detection checkpoint)")
        return trainer.evaluate_only(cfg.model.weights)
    return trainer.train(resume=args.resume, allow_config_change=args.allow_config_change)


if __name__ == "__main__":
    run_tool(main)
