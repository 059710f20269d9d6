"""The GPU check: one short script for a machine with a CUDA device (never part of the tests).

    python benchmarks/gpu_check.py [--size 800] [--steps 10] [--json OUT.json]

In one run, against torchvision with the same weights on the same inputs:
  1. ResNet-50 classifier inference, images/s (ours: prepare_for_inference; torchvision: eager);
  2. R50-FPN Faster R-CNN inference, s/batch, with the detections compared;
  3. R50-FPN training steps with AMP (fp16 autocast + GradScaler), s/step, losses finite;
  4. the same training step in bf16 autocast.
Prints a table of times and ratios (>1: ours faster) and the card's name; record them in
benchmarks/RESULTS.md with the card.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import build_classifier, load_weights, prepare_for_inference  # noqa: E402
from detection.build import build_detector  # noqa: E402
from detection.config import DetConfig  # noqa: E402
from detection.weights import convert_torchvision_detection, match_detections  # noqa: E402
from detection.predictor import Predictor  # noqa: E402
from torchvision_reference import calibrate, torchvision_rcnn  # noqa: E402
from engine.config import load_config  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "detection", "faster_rcnn_R50_FPN_1x.yaml")


def timed(fn, steps: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "torchvision": torchvision.__version__}
    torch.manual_seed(0)

    # 1. classifier inference
    tv_cls = torchvision.models.resnet50(weights=None).eval().to(dev)
    ours_cls = build_classifier("resnet50")
    load_weights(ours_cls, tv_cls.state_dict())
    ours_cls = prepare_for_inference(ours_cls.to(dev))
    x = torch.randn(64, 3, 224, 224, device=dev)
    with torch.inference_mode():
        diff = (tv_cls(x) - ours_cls(x)).abs().max().item()
        t_tv = timed(lambda: tv_cls(x), args.steps)
        t_ours = timed(lambda: ours_cls(x), args.steps)
    report["resnet50_inference"] = {"torchvision_img_s": 64 / t_tv, "ours_img_s": 64 / t_ours,
                                    "ratio": t_tv / t_ours, "max_abs_logit_diff": diff}

    # 2. detector inference
    tv = calibrate(torchvision_rcnn()).eval()
    tv.transform.min_size, tv.transform.max_size = (args.size,), 1333
    state, meta = convert_torchvision_detection(tv.state_dict())
    tv = tv.to(dev)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(args.size * 3 // 4, args.size, 3), dtype=np.uint8) for _ in range(2)]
    overrides = ["model.backbone.weights=null", f"input.min_size_test={args.size}"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "converted.pth")
        torch.save({"model": state, "meta": meta}, path)
        ours = Predictor(CONFIG, path, device="cuda", fast=True, overrides=overrides)
    tv_inputs = [torch.from_numpy(im).to(dev).permute(2, 0, 1).float().div(255) for im in images]
    with torch.inference_mode():
        expected = tv(tv_inputs)
        got = ours.predict_batch(images)
        matched = sum(match_detections({k: v.cpu().numpy() for k, v in e.items()}, g)
                      for e, g in zip(expected, got))
        t_tv = timed(lambda: tv(tv_inputs), args.steps)
        t_ours = timed(lambda: ours.predict_batch(images), args.steps)
    report["fasterrcnn_inference"] = {"torchvision_s": t_tv, "ours_s": t_ours, "ratio": t_tv / t_ours,
                                      "matched": matched, "detections": sum(len(e["boxes"]) for e in expected)}

    # 3-4. training steps under AMP
    cfg = load_config(DetConfig, CONFIG, overrides)
    cfg.model.num_classes = 90
    model = build_detector(cfg.model, cfg.input)
    model.load_state_dict(state)
    model = model.to(dev).train().to(memory_format=torch.channels_last)
    tv.train()
    tv.transform._skip_resize = True
    g = torch.Generator().manual_seed(1)
    train_images = [torch.randint(0, 256, (3, args.size, args.size * 4 // 3), generator=g).float().to(dev)
                    for _ in range(2)]
    targets = []
    for _ in range(2):
        xy = torch.rand(4, 2, generator=g) * args.size * 0.6
        wh = torch.rand(4, 2, generator=g) * args.size * 0.3 + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(dev),
                        "labels": torch.randint(1, 91, (4,), generator=g).to(dev)})
    for dtype in (torch.float16, torch.bfloat16):
        results = {}
        for name, net, scale_input in (("torchvision", tv, True), ("ours", model, False)):
            opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
            losses_seen = []

            def step():
                with torch.autocast("cuda", dtype=dtype):
                    ims = [im / 255 for im in train_images] if scale_input else train_images
                    losses = net(ims, targets)
                total = sum(losses.values())
                losses_seen.append(float(total))
                scaler.scale(total).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)

            results[name] = timed(step, args.steps)
            assert all(np.isfinite(losses_seen)), f"{name}: non-finite loss under {dtype}"
        report[f"train_step_{str(dtype).split('.')[-1]}"] = {
            "torchvision_s": results["torchvision"], "ours_s": results["ours"],
            "ratio": results["torchvision"] / results["ours"]}
    report["max_memory_GiB"] = torch.cuda.max_memory_allocated() / 2 ** 30

    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
