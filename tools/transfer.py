"""Turn a classification checkpoint or foreign weights into reskit weights.

    python tools/transfer.py runs/shapes_resnet18/model_final.pth --out weights/shapes_r18.pth
    python tools/transfer.py resnet50-0676ba61.pth --out weights/R50_tv.pth            # torchvision
    python tools/transfer.py R-50.pkl --out weights/R50_msra.pth --format msra         # Detectron MSRA
    python tools/transfer.py timm_ckpt.pth.tar --out w.pth --name timm:convnext_tiny   # non-ResNet timm

Detection and segmentation configs then take ``model.backbone.weights: weights/R50_tv.pth``. The key
report (loaded / missing / unexpected / mismatched) of the weights in a freshly built backbone is
printed; a source that leaves backbone tensors missing or of another shape writes nothing (exit 1)
unless --allow-partial.

Whole torchvision models convert to whole reskit checkpoints (``model.weights`` of a config, or
``--weights`` of eval_coco.py / predict.py), found from their keys or named with --format:

    python tools/transfer.py fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --out frcnn_R50_FPN.pth
        # -> configs/detection/faster_rcnn_R50_FPN_1x.yaml (maskrcnn_* -> configs/detection/mask_rcnn_R50_FPN_1x.yaml)
    python tools/transfer.py deeplabv3_resnet50_coco-cd0a2569.pth --out deeplabv3_R50.pth
        # -> configs/segmentation/deeplabv3_R50_coco.yaml (fcn_resnet50 -> fcn_R50_coco.yaml)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.transfer import transfer_weights  # noqa: E402
from backbones.weights import FORMATS  # noqa: E402
from engine.checkpoint import save_checkpoint  # noqa: E402
from engine.cli import fail  # noqa: E402

WHOLE_MODEL_FORMATS = ("torchvision-detection", "torchvision-segmentation")


def convert_whole_model(src: str, out, fmt: str) -> bool:
    """Convert a torchvision detector or segmentation model; False when ``src`` is neither."""
    import torch

    from detection.convert import convert_torchvision_detection, is_torchvision_detection
    from segmentation.convert import convert_torchvision_segmentation, detect_arch

    if fmt not in ("auto",) + WHOLE_MODEL_FORMATS or src.endswith((".pkl", ".safetensors")):
        return False
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file: the backbone converters report it
        return False
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "meta" not in state:
        state = state["model"]  # a torchvision references/ checkpoint
    if not isinstance(state, dict):
        return False
    if fmt == "torchvision-detection" or (fmt == "auto" and is_torchvision_detection(state)):
        converted, meta = convert_torchvision_detection(state)
        config = ("configs/detection/mask_rcnn_R50_FPN_1x.yaml" if meta["mask"]
                  else "configs/detection/faster_rcnn_R50_FPN_1x.yaml")
    else:
        is_seg = any(k.startswith("classifier.4.") for k in state) and any(k.startswith("backbone.layer3.") for k in state)
        if not (fmt == "torchvision-segmentation" or is_seg):
            return False
        converted, meta = convert_torchvision_segmentation(state)
        arch = detect_arch(state)
        config = {"fcn_resnet50": "configs/segmentation/fcn_R50_coco.yaml",
                  "deeplabv3_resnet50": "configs/segmentation/deeplabv3_R50_coco.yaml",
                  "deeplabv3_resnet101": "configs/segmentation/deeplabv3_R101_coco.yaml"}.get(arch, "a config with " + str(meta["config"]))
    print(f"source     {meta['source']} ({len(converted)} tensors, {meta['num_classes']} classes)")
    print(f"config     {config}")
    if out:
        save_checkpoint(out, {"model": converted, "meta": meta})
        print(f"wrote      {out}")
    else:
        print("checked    (no --out: nothing written)")
    return True


def parse_options(items):
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--option '{item}' is not of the form key=value")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="classification checkpoint or weights file (.pth, .pt, .safetensors, .pkl)")
    parser.add_argument("--out", help="where to write the backbone weights (omit to only check)")
    parser.add_argument("--format", default="auto", choices=FORMATS + WHOLE_MODEL_FORMATS,
                        help="source format (default: auto)")
    parser.add_argument("--name", help="backbone architecture, e.g. resnet50, plain34, timm:convnext_tiny "
                                       "(default: as the checkpoint records it or as its keys imply)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="backbone option, e.g. stride_in_1x1=true, shortcut=A (repeatable)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the weights even if backbone tensors are missing or mismatched")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.src):
        fail(f"{args.src}: file not found", 1)
    try:
        if convert_whole_model(args.src, args.out, args.format):
            return 0
    except ValueError as e:
        fail(f"{args.src}: {e}", 1)
    if args.format in WHOLE_MODEL_FORMATS:
        fail(f"{args.src}: not a {args.format} state dict", 1)
    try:
        result = transfer_weights(args.src, args.out, args.format, args.name, parse_options(args.option),
                                  allow_partial=args.allow_partial)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 1)
    print(f"backbone   {result.name} {result.options or ''}".rstrip())
    print(result.report)
    if result.dropped:
        shown = ", ".join(result.dropped[:6]) + (", ..." if len(result.dropped) > 6 else "")
        print(f"dropped    {len(result.dropped)}: {shown} (not part of the backbone)")
    print(f"wrote      {args.out}" if args.out else "checked    (no --out: nothing written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
