"""Export a trained model to ONNX or torch.export, checked against the eager model before exit 0.

    python tools/export.py --config configs/detection/faster_rcnn_R50_FPN_1x.yaml \
        --weights runs/x/model_final.pth --format onnx [--out model.onnx] [key=value ...]

Classifiers (tools/train_cls.py checkpoints), Faster / Mask R-CNN (FPN, C4) and semantic segmentation
models; the checkpoint's kind decides. ONNX: checked on ONNX Runtime (classifier / semantic logits
within rtol 1e-3, atol 1e-5; detectors: >= 99% of the eager detections matched at two image sizes).
torch-export (.pt2): classifiers and semantic models. The file carries the label names and ids and
the input normalisation as metadata. What cannot be exported, or does not reproduce the model: one
line, exit 1. docs/deploy.md says what goes in and out of each graph.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.checkpoint import (KIND_BACKBONE, KIND_CLASSIFICATION, KIND_DETECTION,  # noqa: E402
                               KIND_SEMANTIC_SEGMENTATION, checkpoint_kind, read_checkpoint)
from engine.config import ForeignConfigError  # noqa: E402
from engine.export import ExportError  # noqa: E402
from engine.launch import run_tool  # noqa: E402

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


def export_detector(args, checkpoint):
    from detection.export import export_detector_onnx, export_reference, verify_detector
    from detection.predictor import Predictor

    if args.format != "onnx":
        raise ExportError("torchvision's Faster / Mask R-CNN do not go through torch.export "
                          "(data-dependent shapes in NMS and the RoI heads); export detectors with --format onnx")
    predictor = Predictor(args.config, args.weights, device="cpu", fast=False, precision="off",
                          overrides=["model.backbone.weights=null", *args.overrides], checkpoint=checkpoint)
    export_reference(predictor)  # norms folded, as the fast path; the check compares the file with it
    export_detector_onnx(predictor, args.out)
    return verify_detector(predictor, args.out)


def export_classification(args, checkpoint):
    from classification.export import export_classifier
    from classification.predictor import ClassificationPredictor

    predictor = ClassificationPredictor(args.config, args.weights, device="cpu", overrides=args.overrides)
    return export_classifier(predictor, args.out, args.format, atol=args.atol)


def export_segmentation(args, checkpoint):
    from segmentation.export import export_semantic
    from segmentation.predictor import SemanticPredictor

    predictor = SemanticPredictor(args.config, args.weights, device="cpu", overrides=args.overrides,
                                  checkpoint=checkpoint)
    return export_semantic(predictor, args.out, args.format, atol=args.atol)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the run's config (classification: optional, the checkpoint's meta)")
    parser.add_argument("--weights", required=True, help="a checkpoint of train_cls / train_det / train_seg or transfer.py")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--out", help="the file to write (default: beside --weights, .onnx / .pt2)")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="classifier / semantic check: absolute tolerance on the logits (rtol 1e-3); a "
                             "deep network's few near-zero logits may need 1e-4 (docs/deploy.md)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    args.out = args.out or os.path.splitext(args.weights)[0] + FORMATS[args.format]
    if not args.out.endswith(FORMATS[args.format]):
        raise ExportError(f"--out {args.out}: a {args.format} file is named *{FORMATS[args.format]} (what its loaders expect)")

    checkpoint = read_checkpoint(args.weights)
    kind = checkpoint_kind(checkpoint)
    exporters = {KIND_DETECTION: export_detector, None: export_detector,  # None: a bare detector state dict
                 KIND_CLASSIFICATION: export_classification, KIND_SEMANTIC_SEGMENTATION: export_segmentation}
    if kind == KIND_BACKBONE:
        raise ExportError(f"{args.weights}: a backbone alone (tools/transfer.py output) is not exported; export the "
                          "classifier, detector or segmentation model trained from it")
    if kind not in exporters:
        raise ExportError(f"{args.weights}: a {kind} checkpoint; export takes classification, detection and "
                          "semantic segmentation checkpoints")
    if kind != KIND_CLASSIFICATION and not args.config:
        raise ExportError("--config: give the run's config (detection and segmentation need it)")
    try:
        rows = exporters[kind](args, checkpoint)
    except ForeignConfigError as e:  # e.g. a detector with a semantic config: say what the weights are
        raise e.for_checkpoint(args.weights, kind) from None
    except ExportError as e:
        if os.path.isfile(args.out):
            os.remove(args.out)  # a file that failed its check is not left behind to be deployed
        raise ExportError(f"{args.format}: {e}") from None
    for row in rows:
        print("checked    " + json.dumps(row))
    print(f"wrote      {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB, {args.format}, "
          f"{kind or KIND_DETECTION}; verified against the eager model)")


def cli(argv=None):
    """main() as a tool: every failure one line, exit 1 (export) / 2 (config)."""
    run_tool(lambda: _run(argv))


def _run(argv=None):
    try:
        main(argv)
    except ExportError as e:
        from engine.cli import fail

        fail(str(e), 1)


if __name__ == "__main__":
    cli()
