"""What the detection report costs beside the evaluation it reports on, in one process.

    python benchmarks/report_speed.py [--run runs/demo/mask_rcnn] [--repeat 2] [--profile 25]

``--run`` is a trained detection run's folder (its ``config.yaml`` and ``model_final.pth``; the
default is what ``make demo`` leaves). The model is evaluated as ``tools/eval_coco.py --config
--weights --report`` does it (DetectionTask and Trainer.evaluate_only; the run's ``metrics.jsonl``
is copied beside, so the report draws the training curves as a training run's does). The CPU time
of the process (every thread) is taken around the evaluation (Trainer._evaluate_model: inference
and COCOeval, what a training run's final evaluation does) and around the report
(Trainer.write_report: the detection sections, the run's section, the files written). Goal
(issue 29): the report at most 10% of the evaluation.

Everything the report does counts, imports included (the first pass is what a run pays: one report
a process). The output says whether matplotlib was loaded: the detection report draws its curves
as SVG text (engine/svg_chart.py), matplotlib only a confusion matrix of more than 30 classes.
``--profile N`` prints the N costliest functions of the last report (cProfile, cumulative time).
CPU times, not wall clocks: on a machine shared with other work both sides grow alike, so compare
the ratio.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import engine.threads  # noqa: E402,F401  the tools' thread policy, before torch starts


def cpu() -> float:
    return time.process_time()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=os.path.join(ROOT, "runs", "demo", "mask_rcnn"),
                        help="a detection run's output folder (config.yaml, model_final.pth, metrics.jsonl)")
    parser.add_argument("--weights", help="default: RUN/model_final.pth")
    parser.add_argument("--repeat", type=int, default=2, help="evaluations and reports, each pair in turn")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N costliest functions of the last report (cProfile)")
    parser.add_argument("--keep", metavar="DIR", help="write the report here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    weights = args.weights or os.path.join(args.run, "model_final.pth")
    config = os.path.join(args.run, "config.yaml")
    for path in (config, weights):
        if not os.path.isfile(path):
            raise SystemExit(f"{path} not found: give --run, a trained detection run's folder (make demo leaves "
                             "runs/demo/mask_rcnn)")

    from detection.config import DetConfig
    from detection.task import DetectionTask
    from detection.weights import REMEDY
    from engine.checkpoint import read_checkpoint
    from engine.cli import parse_config
    from engine.trainer import Trainer

    out = args.keep or tempfile.mkdtemp(prefix="report_speed_")
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(os.path.join(args.run, "metrics.jsonl")):
        shutil.copy(os.path.join(args.run, "metrics.jsonl"), out)
    cfg = parse_config(DetConfig, config, ["model.backbone.weights=null", f"model.weights={weights}",
                                           f"output_dir={out}", "test.report=true"])
    task = DetectionTask(cfg, training=False, checkpoint=read_checkpoint(weights, REMEDY))
    trainer = Trainer(cfg, task)
    timings = {"evaluation": [], "report": []}
    write_report = trainer.write_report
    profile = cProfile.Profile() if args.profile else None

    def timed_report(results):
        if profile is not None:
            profile.enable()
        t = cpu()
        path = write_report(results)
        timings["report"].append(cpu() - t)
        if profile is not None:
            profile.disable()
        return path

    evaluate_model = trainer._evaluate_model

    def timed_evaluation(model):
        t = cpu()
        results = evaluate_model(model)
        timings["evaluation"].append(cpu() - t)
        return results

    trainer.write_report, trainer._evaluate_model = timed_report, timed_evaluation
    for _ in range(args.repeat):
        if profile is not None:
            profile.clear()
        trainer.evaluate_only(weights)
    records = task._last_eval["records"]
    print(f"\n{args.run}: {len(task._last_eval['image_ids'])} images, {len(records)} detections "
          f"({sum('segmentation' in r for r in records)} with masks); report in {os.path.join(out, 'report')}")
    print(f"matplotlib loaded: {'yes' if 'matplotlib' in sys.modules else 'no'}")
    for i, (ev, rep) in enumerate(zip(timings["evaluation"], timings["report"])):
        print(f"pass {i + 1}: evaluation {ev:.2f} s CPU, report {rep:.2f} s CPU = {100 * rep / ev:.1f}%")
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(args.profile)
        print(text.getvalue())
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
