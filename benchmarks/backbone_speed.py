"""Images/s of our ResNet-50 fast path against torchvision's resnet50 with the same weights, on the CPU.

Three contestants, one process, interleaved rounds (so a busy machine slows all of them alike):
  * ours: ``build_classifier("resnet50")`` loaded from torchvision's state dict, then
    ``prepare_for_inference`` (norms folded, channels-last);
  * torchvision default: ``torchvision.models.resnet50`` in NCHW;
  * torchvision channels-last: the same model and inputs in channels-last memory.
All run under ``torch.inference_mode``; the logits are checked equal before timing. Ratios use each
contestant's best round (as ``timeit`` advises: on a shared machine the slower rounds measure the
other processes); medians are printed beside them.
Goals (issue 2): ours >= 1.3x torchvision default and >= 1.05x its channels-last.

    python benchmarks/backbone_speed.py [--batch 8] [--size 224] [--rounds 12] [--threads N] [--clock wall|cpu]

On a machine busy with other work, ``--threads 1 --clock cpu`` times this process's own CPU seconds,
which other processes barely disturb (with several threads CPU time would count their spin-waits).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from backbones import build_classifier, load_weights, prepare_for_inference
from engine.hardware import describe_device


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics so the equality check means something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def time_once(model, x, iters: int, clock=time.perf_counter) -> float:
    """Seconds per batch over ``iters`` batches."""
    start = clock()
    for _ in range(iters):
        model(x)
    return (clock() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=1, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (use with --threads 1)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    reference = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        randomize_bn(reference)
    reference.eval()
    reference_cl = torchvision.models.resnet50(weights=None)
    reference_cl.load_state_dict(reference.state_dict())
    reference_cl.eval().to(memory_format=torch.channels_last)
    ours = build_classifier("resnet50")
    load_weights(ours, reference.state_dict())
    prepare_for_inference(ours)

    x = torch.randn(args.batch, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    layout = "channels-last" if getattr(ours, "channels_last", False) else "NCHW"
    sides = {"ours (fast path)": f"fp32, {layout}, norms folded",
             "torchvision default": "fp32, NCHW", "torchvision channels-last": "fp32, channels-last"}
    contestants = {
        "ours (fast path)": (ours, x),
        "torchvision default": (reference, x),
        "torchvision channels-last": (reference_cl, x_cl),
    }
    with torch.inference_mode():
        expected = reference(x)
        for name, (model, inp) in contestants.items():
            out = model(inp)
            err = ((out - expected).abs().max() / expected.abs().max()).item()
            if err > 1e-4:
                raise SystemExit(f"{name}: logits differ from torchvision's by {err:.2e} (relative)")
        for _ in range(args.warmup):
            for model, inp in contestants.values():
                model(inp)
        seconds = {name: [] for name in contestants}
        for _ in range(args.rounds):
            for name, (model, inp) in contestants.items():
                seconds[name].append(time_once(model, inp, args.iters, clock))

    print(f"ResNet-50 inference, CPU, batch {args.batch} at {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, {args.rounds} rounds x {args.iters} batches "
          f"(torch {torch.__version__})")
    print(f"  {describe_device(torch.device('cpu'))}")
    speed = {name: args.batch / min(s) for name, s in seconds.items()}
    for name, ips in speed.items():
        median = args.batch / statistics.median(seconds[name])
        print(f"  {name:<28}{ips:8.1f} images/s best round   ({median:.1f} median)   [{sides[name]}]")
    ratio_default = speed["ours (fast path)"] / speed["torchvision default"]
    ratio_cl = speed["ours (fast path)"] / speed["torchvision channels-last"]
    print(f"  ours / torchvision default      {ratio_default:5.2f}x  (goal >= 1.30x)")
    print(f"  ours / torchvision channels-last {ratio_cl:5.2f}x  (goal >= 1.05x)")


if __name__ == "__main__":
    main()
