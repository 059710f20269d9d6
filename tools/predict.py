"""Run a detector, Mask R-CNN or a semantic segmentation model on an image or a folder of images.

    python tools/predict.py --config configs/detection/faster_rcnn_R50_FPN_1x.yaml \
        --weights runs/faster_rcnn_R50_FPN_1x/model_final.pth --input photos/ --output out/

Detection (Faster / Mask R-CNN checkpoints): OUT/predictions.json holds one record per detection
(file_name, bbox as x, y, w, h in the image's pixels, score, category_id) and one PNG per image shows
the boxes, class names, scores and instance masks. Semantic segmentation checkpoints (the kind is
read from the checkpoint): one PNG label map per image (``*_labels.png``, class indices) and one
overlay in the class palette; predictions.json lists the pixel count of each class per image.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.predictor import Predictor  # noqa: E402
from detection.visualize import draw_detections, write_rgb  # noqa: E402
from detection.weights import REMEDY  # noqa: E402
from engine.checkpoint import KIND_DETECTION, KIND_SEMANTIC_SEGMENTATION, checkpoint_kind, read_checkpoint  # noqa: E402
from engine.data import DataError  # noqa: E402
from engine.image_io import read_image  # noqa: E402
from engine.launch import run_tool  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str) -> list:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    return files


def predict_semantic(args, files: list, checkpoint: dict) -> None:
    import cv2
    import numpy as np

    from segmentation.predictor import SemanticPredictor
    from segmentation.visualize import overlay

    predictor = SemanticPredictor(args.config, args.weights, device=args.device, overrides=args.overrides,
                                  checkpoint=checkpoint)
    records = []
    for path in files:
        image = read_image(path)
        labels = predictor(image)
        stem = os.path.splitext(os.path.basename(path))[0]
        cv2.imwrite(os.path.join(args.output, stem + "_labels.png"), labels.astype(np.uint8))
        write_rgb(os.path.join(args.output, stem + ".png"), overlay(image, labels))
        counts = np.bincount(labels.reshape(-1), minlength=len(predictor.class_names))
        records.append({"file_name": os.path.basename(path),
                        "pixels": {predictor.class_names[i]: int(c) for i, c in enumerate(counts) if c}})
    with open(os.path.join(args.output, "predictions.json"), "w", encoding="utf-8") as f:
        json.dump(records, f)
    print(f"{len(files)} images -> {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for predictions.json and the PNGs")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="drawn boxes only")
    parser.add_argument("--device", default=None)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args()

    files = list_images(args.input)
    os.makedirs(args.output, exist_ok=True)
    checkpoint = read_checkpoint(args.weights, REMEDY)  # once: the kind decides, the predictor loads it
    kind = checkpoint_kind(checkpoint)
    if kind == KIND_SEMANTIC_SEGMENTATION:
        return predict_semantic(args, files, checkpoint)
    if kind not in (KIND_DETECTION, None):  # None: an older or bare detector state dict, tried as one
        raise DataError(f"--weights {args.weights}: a {kind} checkpoint; predict.py runs detection and semantic "
                        "segmentation checkpoints (classification: tools/train_cls.py --eval-only)")
    predictor = Predictor(args.config, args.weights, device=args.device,
                          overrides=["model.backbone.weights=null", *args.overrides], checkpoint=checkpoint)
    records = []
    for path in files:
        image = read_image(path)
        pred = predictor(image)
        for box, score, cat in zip(pred["boxes"], pred["scores"], pred["category_ids"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append({"file_name": os.path.basename(path), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score), "category_id": int(cat)})
        drawn = draw_detections(image, pred, predictor.category_names, args.score_thresh)
        write_rgb(os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png"), drawn)
    with open(os.path.join(args.output, "predictions.json"), "w", encoding="utf-8") as f:
        json.dump(records, f)
    print(f"{len(files)} images, {len(records)} detections -> {args.output}")


if __name__ == "__main__":
    run_tool(main)
