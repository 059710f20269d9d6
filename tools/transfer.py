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

import engine.threads  # noqa: E402,F401  the thread policy's OMP_WAIT_POLICY, before torch starts

from backbones.locate import is_weights_name, library_file  # noqa: E402
from backbones.transfer import transfer_weights  # noqa: E402
from backbones.weights import FORMATS, read_weights  # noqa: E402
from detection.weights import convert_torchvision_detection, is_torchvision_detection  # noqa: E402
from engine.checkpoint import save_checkpoint  # noqa: E402
from engine.cli import fail  # noqa: E402
from segmentation.weights import convert_torchvision_segmentation, is_torchvision_segmentation  # noqa: E402

# Whole models each package converts: --format name -> (recogniser, converter). Anything else is
# backbone weights for backbones.transfer.
WHOLE_MODELS = {
    "torchvision-detection": (is_torchvision_detection, convert_torchvision_detection),
    "torchvision-segmentation": (is_torchvision_segmentation, convert_torchvision_segmentation),
}
# The config each converted torchvision model is evaluated and fine-tuned with.
CONFIGS = {"maskrcnn_resnet50_fpn": "configs/detection/mask_rcnn_R50_FPN_1x.yaml",
           "fasterrcnn_resnet50_fpn": "configs/detection/faster_rcnn_R50_FPN_1x.yaml",
           "fcn_resnet50": "configs/segmentation/fcn_R50_coco.yaml",
           "deeplabv3_resnet50": "configs/segmentation/deeplabv3_R50_coco.yaml",
           "deeplabv3_resnet101": "configs/segmentation/deeplabv3_R101_coco.yaml"}


def _whole_state(content):
    """The state dict of a whole model: bare, or under "model" in a checkpoint of torchvision's
    references/ scripts (which record no "meta", unlike ours)."""
    if isinstance(content, dict) and isinstance(content.get("model"), dict) and "meta" not in content:
        return content["model"]
    return content if isinstance(content, dict) else None


def whole_model_format(content, fmt: str):
    """The WHOLE_MODELS key that converts ``content`` (the one --format names, or the one that
    recognises its keys under --format auto), or None: backbone weights."""
    state = _whole_state(content)
    if state is None or fmt not in ("auto", *WHOLE_MODELS):
        return None
    if fmt in WHOLE_MODELS:
        return fmt
    return next((name for name, (recognise, _) in WHOLE_MODELS.items() if recognise(state)), None)


def convert_whole_model(content, fmt: str, out) -> None:
    """Convert a torchvision detector or segmentation model; write it as a reskit checkpoint."""
    converted, meta = WHOLE_MODELS[fmt][1](_whole_state(content))  # a ValueError says what does not fit
    arch = meta["source"].split()[-1]  # "torchvision fcn_resnet50"
    print(f"source     {meta['source']} ({len(converted)} tensors, {meta['num_classes']} classes)")
    print(f"config     {CONFIGS.get(arch) or 'a config with ' + str(meta.get('config', {}))}")
    if out:
        save_checkpoint(out, {"model": converted, "meta": meta})
        print(f"wrote      {out}")
    else:
        print("checked    (no --out: nothing written)")


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
    parser.add_argument("src", help="classification checkpoint or weights file (.pth, .pt, .safetensors, .pkl), "
                                    "or a name: torchvision:ResNet50_Weights.IMAGENET1K_V2, timm:resnet50.a1_in1k, "
                                    "detectron2://ImageNetPretrained/MSRA/R-50.pkl (docs/weights.md)")
    parser.add_argument("--out", help="where to write the backbone weights (omit to only check)")
    parser.add_argument("--format", default="auto", choices=FORMATS + tuple(WHOLE_MODELS),
                        help="source format (default: auto)")
    parser.add_argument("--name", help="backbone architecture, e.g. resnet50, plain34, timm:convnext_tiny "
                                       "(default: as the checkpoint records it or as its keys imply)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="backbone option, e.g. stride_in_1x1=true, shortcut=A (repeatable)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the weights even if backbone tensors are missing or mismatched")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.src) and not is_weights_name(args.src):
        fail(f"{args.src}: file not found", 1)
    try:
        # a name: the library's own file (a whole torchvision detector converts as one), not the cached backbone
        read = read_weights(library_file(args.src) if is_weights_name(args.src) else args.src)  # once, no code run
        whole = whole_model_format(read.content, args.format)
        if whole:
            convert_whole_model(read.content, whole, args.out)
            return 0
        result = transfer_weights(read, args.out, args.format, args.name, parse_options(args.option),
                                  allow_partial=args.allow_partial)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e) if str(e).startswith(args.src) else f"{args.src}: {e}", 1)
    print(f"backbone   {result.name} {result.options or ''}".rstrip())
    print(result.report)
    if result.dropped:
        shown = ", ".join(result.dropped[:6]) + (", ..." if len(result.dropped) > 6 else "")
        print(f"dropped    {len(result.dropped)}: {shown} (not part of the backbone)")
    print(f"wrote      {args.out}" if args.out else "checked    (no --out: nothing written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
