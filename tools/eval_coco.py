"""COCO evaluation of a results file or of a model.

    python tools/eval_coco.py --gt G.json --results R.json --iou-type bbox|segm [--output OUT.json]
                              [--report DIR --images IMAGES_DIR]
    python tools/eval_coco.py --config C.yaml --weights W.pth [--output OUT.json] [--report DIR] [key=value ...]
    torchrun --nproc_per_node=8 tools/eval_coco.py --config C.yaml --weights W.pth

Prints the 12 COCO numbers and the per-category AP table and writes them in percent to OUT.json
(results file mode: default results.json beside R.json, metrics.json when R is itself
results.json; model mode: output_dir/results_eval.json, with the results file the model produced in
output_dir/inference/). ``--report DIR`` writes DIR/index.html, the evaluation report (detection.report:
per-class table, precision-recall curves, confusion matrix, error breakdown, the images with the most
errors, drawn from --images in results-file mode); model mode writes output_dir/report without it
(test.report=false: none). In model mode each rank runs
the model over its shard of data.val[0]; rank 0 evaluates. Bad input: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import engine.threads  # noqa: F401  the thread policy's OMP_WAIT_POLICY, before torch starts (model mode)
from detection.evaluation import BACKENDS, evaluate_results_file, format_table
from engine.data import DataError



def fail(message: str, code: int = 2):
    # engine.cli.fail, imported only on this path: engine.cli loads OmegaConf and the logger (~0.2 s),
    # which the results-file mode does not need (benchmarks/eval_startup.py)
    from engine.cli import fail as cli_fail
    cli_fail(message, code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", metavar="G.json", help="ground-truth COCO annotation file")
    parser.add_argument("--results", metavar="R.json", help="results file (the format COCO.loadRes reads)")
    parser.add_argument("--iou-type", default="bbox", choices=["bbox", "segm"])
    parser.add_argument("--output", metavar="OUT.json", help="metrics file (default: results.json beside R.json; metrics.json if R is results.json)")
    parser.add_argument("--backend", default="faster_coco_eval", choices=[*BACKENDS, "onnxruntime"],
                        help="COCO evaluation backend; onnxruntime: run --weights, a .onnx of tools/export.py, on "
                             "ONNX Runtime (COCO numbers by faster_coco_eval)")
    parser.add_argument("--config", metavar="C.yaml", help="model mode: a detection config")
    parser.add_argument("--weights", metavar="W.pth", help="model mode: a detection checkpoint")
    parser.add_argument("--report", metavar="DIR", help="write the evaluation report, DIR/index.html (a static page)")
    parser.add_argument("--images", metavar="DIR", help="results-file mode: the images of --gt, for the report's gallery")
    parser.add_argument("--report-max-mb", type=float, default=20.0, metavar="MB",
                        help="bound on the report's images (default 20); further images are left out, with a note")
    parser.add_argument("--report-score-thresh", type=float, default=0.5, metavar="S",
                        help="score threshold of the report's confusion matrix and gallery (default 0.5)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="model mode: config overrides")
    return parser


def evaluate_model(args) -> dict:
    """Run the detector of ``--config`` with ``--weights`` over the validation set, then evaluate."""
    from detection.config import DetConfig
    from detection.evaluation import write_metrics_json
    from detection.task import DetectionTask
    from detection.weights import REMEDY
    from engine.checkpoint import read_checkpoint
    from engine.cli import parse_config
    from engine.dist import is_main_process
    from engine.trainer import Trainer

    overrides = ["model.backbone.weights=null", f"model.weights={args.weights}",
                 f"test.backend={args.backend}", *args.overrides]
    if args.report:
        overrides += ["test.report=true", f"test.report_max_mb={args.report_max_mb}"]
    onnx = args.backend == "onnxruntime" or args.weights.endswith(".onnx")
    if onnx:
        overrides[2] = "test.backend=faster_coco_eval"
    cfg = parse_config(DetConfig, args.config, overrides)
    if onnx:  # the exported graph on ONNX Runtime, through the task's own evaluation (detection/export.py)
        from detection.export import OnnxPredictor
        from engine.jsonio import write_json

        runtime = OnnxPredictor(args.weights)
        task = DetectionTask(cfg, training=False, checkpoint={"model": {}, "meta": runtime.label_space()})
        task.report_score_thresh = args.report_score_thresh
        metrics = task.evaluate(runtime.as_model())  # the task logs the table
        write_json(args.output or os.path.join(cfg.output_dir, "results_eval.json"), metrics)
        if args.report:
            from engine.report import Report
            from engine.report_run import add_run_section

            report = Report(args.report, "", max_mb=args.report_max_mb, limit_hint="--report-max-mb")
            task.write_report(report, metrics)
            add_run_section(report, None, [f"ONNX Runtime: {args.weights}"], task.report_notes())
            print(f"report written to {report.write()}")
        return metrics
    # Read once, before any work: a file that is no detection checkpoint stops here, in one line.
    task = DetectionTask(cfg, training=False, checkpoint=read_checkpoint(args.weights, REMEDY))
    task.report_score_thresh = args.report_score_thresh
    trainer = Trainer(cfg, task)
    trainer.report_dir = args.report
    metrics = trainer.evaluate_only(args.weights)  # the task logs the table
    if is_main_process():
        if args.output:
            write_metrics_json(metrics, args.output)
        print(f"metrics written to {args.output or os.path.join(cfg.output_dir, 'results_eval.json')}")
    return metrics


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.config or args.weights:
        if not (args.config and args.weights):
            fail("model mode needs both --config C.yaml and --weights W.pth")
        from engine.launch import run_tool
        run_tool(lambda: evaluate_model(args))
        return 0
    if not (args.gt and args.results):
        fail("give --gt G.json --results R.json, or --config C.yaml --weights W.pth")
    try:
        from detection.evaluation import prepare_ground_truth

        gt = prepare_ground_truth(args.gt, log=False)  # cleaned once; what it dropped is said here
        print(f"ground truth {gt.cleaning.summary()}", flush=True)
        start = time.perf_counter()
        metrics = evaluate_results_file(gt, args.results, args.iou_type, args.backend, args.output)
        seconds = time.perf_counter() - start
    except DataError as e:
        fail(str(e))
    print(format_table(metrics), end="")
    from detection.evaluation import default_metrics_path

    print(f"metrics written to {args.output or default_metrics_path(args.results)}")
    if args.report:
        try:
            path, report_seconds = write_results_report(args, gt)
        except DataError as e:
            fail(str(e))
        print(f"report written to {path} ({report_seconds:.1f} s; the evaluation took {seconds:.1f} s)")
    return 0


def write_results_report(args, gt) -> tuple:
    """The evaluation report of a results file (results-file mode's --report): (path, seconds)."""
    from detection.coco_results import load_results_file
    from detection.report import add_detection_sections
    from engine.report import Report
    from engine.report_run import add_run_section

    start = time.perf_counter()
    records = load_results_file(args.results, gt, args.iou_type)
    report = Report(args.report, f"COCO evaluation ({args.iou_type}): {os.path.basename(args.results)}",
                    subtitle=f"{args.results} against {args.gt}", max_mb=args.report_max_mb,
                    limit_hint="--report-max-mb")
    add_detection_sections(report, gt, records, (args.iou_type,), images_dir=args.images, backend=args.backend,
                           score_thresh=args.report_score_thresh)
    cleaning = gt.cleaning
    dropped = cleaning.summary() + "".join(f"\n  {reason}: " + "; ".join(examples)
                                           for reason, examples in cleaning.examples.items())
    add_run_section(report, notes=[("ground truth", dropped),
                                   ("results", f"{args.results}: {len(records)} {args.iou_type} records")],
                    title="Inputs")
    return report.write(), time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
