"""Turn a classification checkpoint or foreign ImageNet weights into backbone weights.

    python tools/transfer.py runs/shapes_resnet18/model_final.pth --out weights/shapes_r18.pth
    python tools/transfer.py resnet50-0676ba61.pth --out weights/R50_tv.pth            # torchvision
    python tools/transfer.py R-50.pkl --out weights/R50_msra.pth --format msra         # Detectron MSRA
    python tools/transfer.py timm_ckpt.pth.tar --out w.pth --name timm:convnext_tiny   # non-ResNet timm

Detection and segmentation configs then take ``model.backbone.weights: weights/R50_tv.pth``. The key
report (loaded / missing / unexpected / mismatched) of the weights in a freshly built backbone is
printed; a source that leaves backbone tensors missing or of another shape writes nothing (exit 1)
unless --allow-partial.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.transfer import transfer_weights  # noqa: E402
from backbones.weights import FORMATS  # noqa: E402
from engine.cli import fail  # noqa: E402


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
    parser.add_argument("--format", default="auto", choices=FORMATS, help="source format (default: auto)")
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
