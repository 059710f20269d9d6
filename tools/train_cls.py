"""Train an image classifier (ImageNet / any ImageFolder tree / the synthetic shapes), or evaluate one.

    python tools/train_cls.py --config configs/classification/resnet50_imagenet_paper.yaml
    torchrun --nproc_per_node=8 tools/train_cls.py --config ... [--resume] [key.sub=value ...]
    python tools/train_cls.py --config ... --eval-only [model.weights=runs/x/model_final.pth] [test.ten_crop=true]

Hand the result to detection with ``python tools/transfer.py RUN/model_final.pth --out backbone.pth``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.threads  # noqa: E402,F401  the thread policy's OMP_WAIT_POLICY, before torch starts

from classification.config import ClsConfig  # noqa: E402
from classification.task import ClassificationTask  # noqa: E402
from engine.cli import default_argument_parser, parse_config  # noqa: E402
from engine.dist import is_main_process  # noqa: E402
from engine.launch import run_tool  # noqa: E402
from engine.trainer import Trainer  # noqa: E402


def main():
    args = default_argument_parser(__doc__.splitlines()[0]).parse_args()
    # evaluation reads every weight from the checkpoint: the backbone's starting weights need not be there
    overrides = (["model.backbone.weights=null"] if args.eval_only else []) + list(args.overrides)
    cfg = parse_config(ClsConfig, args.config, overrides, resume=args.resume and not args.eval_only)
    trainer = Trainer(cfg, ClassificationTask(cfg, training=not args.eval_only))
    if args.eval_only:  # model.weights, else output_dir/model_final.pth
        results = trainer.evaluate_only(cfg.model.weights)
    else:
        results = trainer.train(resume=args.resume, allow_config_change=args.allow_config_change)
    if results and is_main_process():  # every rank holds them; one line under torchrun
        print("results: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in results.items()), flush=True)
    return results


if __name__ == "__main__":
    run_tool(main)
