"""Run a detector, Mask R-CNN or a semantic segmentation model on an image or a folder of images.

    python tools/predict.py --config configs/detection/faster_rcnn_R50_FPN_1x.yaml \
        --weights runs/faster_rcnn_R50_FPN_1x/model_final.pth --input photos/ --output out/

Detection (Faster / Mask R-CNN checkpoints): OUT/predictions.json holds one record per detection
(file_name, bbox as x, y, w, h in the image's pixels, score, category_id, category_name) and one PNG per image shows
the boxes, class names, scores and instance masks. Semantic segmentation checkpoints (the kind is
read from the checkpoint): one PNG label map per image (``*_labels.png``, class indices) and one
overlay in the class palette; predictions.json lists the pixel count of each class per image.
Inputs that share a file name are named by their path (:func:`output_names`), never overwritten.
"""
import argparse
import glob
import logging
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.threads  # noqa: E402,F401  the thread policy's OMP_WAIT_POLICY, before torch starts
from detection.predictor import Predictor  # noqa: E402
from detection.visualize import draw_detections, write_rgb  # noqa: E402
from detection.weights import REMEDY  # noqa: E402
from engine.checkpoint import KIND_DETECTION, KIND_SEMANTIC_SEGMENTATION, checkpoint_kind, read_checkpoint  # noqa: E402
from engine.config import ForeignConfigError  # noqa: E402
from engine.data import DataError  # noqa: E402
from engine.image_io import decoder_messages_named, read_image as _read_image  # noqa: E402
from engine.launch import run_tool  # noqa: E402
from engine.logger import setup_logging  # noqa: E402
from engine.jsonio import write_json  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str):
    """The image, with libjpeg's "Corrupt JPEG data" lines turned into a warning naming the file."""
    with decoder_messages_named():
        return _read_image(path)


def list_images(paths) -> list:
    """The image files of ``--input``: files, folders (their images, sorted) and globs, in the order
    given, each file once."""
    if isinstance(paths, str):
        paths = [paths]
    files = []
    for path in paths:
        if os.path.isfile(path):
            found = [path]
        elif os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        elif glob.has_magic(path):
            found = sorted(f for f in glob.glob(path, recursive=True)
                           if os.path.isfile(f) and f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"--input {path}: the pattern matches no image ({', '.join(IMAGE_EXTENSIONS)})")
        else:
            raise FileNotFoundError(f"--input {path}: no such file or folder")
        files.extend(f for f in found if f not in files)
    return files


def output_names(files: list) -> dict:
    """{input path: (name of its output PNGs without extension, its file_name in predictions.json)}.

    The file's own name where it is unique among the inputs; where two inputs share a name
    (photos/a.jpg and more/a.jpg, or a.jpg beside a.png) both are named by their path relative to the
    inputs' common folder, separators as ``__`` and the extension kept (``photos__a_jpg``), so that no
    output overwrites another and every record says which image it is about."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    count = Counter(stems)
    shared = [f for f, stem in zip(files, stems) if count[stem] > 1]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in shared]) if shared else ""
    names, taken = {}, set()
    for f, stem in zip(files, stems):
        if count[stem] == 1:
            name, label = stem, os.path.basename(f)
        else:
            label = os.path.relpath(os.path.abspath(f), root)
            base, ext = os.path.splitext(label)
            name = base.replace(os.sep, "__") + ext.replace(".", "_")
        unique, k = name, 2
        while unique in taken:  # a renamed input that meets another's own name
            unique, k = f"{name}_{k}", k + 1
        taken.add(unique)
        names[f] = (unique, label)
    if shared:
        shown = ", ".join(f"{names[f][1]} -> {names[f][0]}.png" for f in shared[:4])
        print(f"{len(shared)} inputs share a file name: their outputs are named by their path ({shown}"
              f"{' ...' if len(shared) > 4 else ''})", flush=True)
    return names


def _say_empty(empty: list, files: list, threshold: float, model_threshold: float) -> None:
    """One line for the images where no detection reaches the drawing threshold, with their top scores."""
    if not empty:
        return
    none = f"(no detection: none scored >= model.roi_heads.score_thresh {model_threshold})"
    shown = ", ".join(f"{name} {none if top is None else f'(top score {top:.3f})'}" for name, top in empty[:5])
    more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
    print(f"{len(empty)} of {len(files)} images have no detection with score >= --score-thresh {threshold}: "
          f"{shown}{more}", flush=True)


def predict_semantic(args, files: list, checkpoint: dict) -> None:
    import cv2
    import numpy as np

    from segmentation.predictor import SemanticPredictor
    from segmentation.visualize import overlay

    predictor = SemanticPredictor(args.config, args.weights, device=args.device, overrides=args.overrides,
                                  checkpoint=checkpoint)
    logging.getLogger("predict").info("model weights:\n%s", predictor.load_report)
    _say_hardware(predictor)
    records = []
    names = output_names(files)
    for path in files:
        image = read_image(path)
        labels = predictor(image)
        stem, file_name = names[path]
        cv2.imwrite(os.path.join(args.output, stem + "_labels.png"), labels.astype(np.uint8))
        write_rgb(os.path.join(args.output, stem + ".png"), overlay(image, labels, names=predictor.class_names))
        counts = np.bincount(labels.reshape(-1), minlength=len(predictor.class_names))
        records.append({"file_name": file_name,
                        "pixels": {predictor.class_names[i]: int(c) for i, c in enumerate(counts) if c}})
    write_json(os.path.join(args.output, "predictions.json"), records, indent=None)  # strict JSON (NaN -> null)
    print(f"{len(files)} images -> {args.output}")


def _say_hardware(predictor) -> None:
    from engine.hardware import apply_thread_policy, describe_device

    threads, why = apply_thread_policy(num_workers=0)
    print(f"{describe_device(predictor.device)}; precision {predictor.precision.name} ({predictor.precision.reason}); "
          f"{threads} threads ({why})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--input", required=True, nargs="+",
                        help="image files, folders of images and glob patterns ('photos/*.jpg')")
    parser.add_argument("--output", required=True, help="folder for predictions.json and the PNGs")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="drawn boxes only (predictions.json keeps every detection)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--backend", default="eager", choices=["eager", "onnxruntime"],
                        help="onnxruntime: --weights is a detector .onnx of tools/export.py (implied by .onnx)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args()

    from engine.hardware import resolve_device
    resolve_device(args.device)  # a device this machine lacks stops here, before any work
    files = list_images(args.input)
    os.makedirs(args.output, exist_ok=True)
    setup_logging(args.output)  # the INFO log (the weights' load report) on the console and in OUT/log.txt
    onnx = args.backend == "onnxruntime" or args.weights.endswith(".onnx")  # detection/export.py
    checkpoint = {} if onnx else read_checkpoint(args.weights, REMEDY)  # once: the kind decides, the predictor loads it
    kind = KIND_DETECTION if onnx else checkpoint_kind(checkpoint)
    try:
        return predict_with(args, files, checkpoint, kind, onnx)
    except ForeignConfigError as e:  # e.g. a detector with a semantic config: say what the weights are
        raise e.for_checkpoint(args.weights, kind) from None


def predict_with(args, files: list, checkpoint: dict, kind, onnx: bool) -> None:
    if kind == KIND_SEMANTIC_SEGMENTATION:
        return predict_semantic(args, files, checkpoint)
    if kind not in (KIND_DETECTION, None):  # None: an older or bare detector state dict, tried as one
        raise DataError(f"--weights {args.weights}: a {kind} checkpoint; predict.py runs detection and semantic "
                        "segmentation checkpoints (classification: tools/train_cls.py --eval-only)")
    if onnx:
        from detection.export import OnnxPredictor

        predictor = OnnxPredictor(args.weights)
        print(predictor.describe(), flush=True)
    else:
        predictor = Predictor(args.config, args.weights, device=args.device,
                              overrides=["model.backbone.weights=null", *args.overrides], checkpoint=checkpoint)
        logging.getLogger("predict").info("detector weights:\n%s", predictor.load_report)
        _say_hardware(predictor)
    from detection.masks import masks_to_rles

    records, empty = [], []
    names = output_names(files)
    for path in files:
        image = read_image(path)
        pred = predictor(image)
        stem, file_name = names[path]
        # Mask R-CNN: each record carries its mask as a compressed RLE (COCO results format)
        rles = masks_to_rles(pred["masks"]) if "masks" in pred else None
        for i, (box, score, cat) in enumerate(zip(pred["boxes"], pred["scores"], pred["category_ids"])):
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append({"file_name": file_name, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score), "category_id": int(cat),
                            "category_name": predictor.category_names.get(int(cat), str(int(cat)))})
            if rles is not None:
                records[-1]["segmentation"] = rles[i]
        if not (pred["scores"] >= args.score_thresh).any():
            empty.append((file_name, float(pred["scores"].max()) if len(pred["scores"]) else None))
        drawn = draw_detections(image, pred, predictor.category_names, args.score_thresh)
        write_rgb(os.path.join(args.output, stem + ".png"), drawn)
    write_json(os.path.join(args.output, "predictions.json"), records, indent=None)  # strict JSON (NaN -> null)
    _say_empty(empty, files, args.score_thresh, predictor.score_thresh if onnx else predictor.cfg.model.roi_heads.score_thresh)
    print(f"{len(files)} images, {len(records)} detections -> {args.output}")


if __name__ == "__main__":
    run_tool(main)
