"""The degradation problem in one command (He et al. 2015, Figure 6): plain-20/56 against ResNet-20/56.

    python tools/degradation.py [--quick] [--out DIR] [--cifar PATH] [--synthetic] [--iters N] [--seed S]

Data: CIFAR-10 when a local copy is found, else the built-in synthetic shapes. Nothing is downloaded.
CIFAR-10 is the python or binary archive (``cifar-10-batches-py`` / ``cifar-10-batches-bin``, unpacked
or the ``.tar.gz``), looked for at ``--cifar PATH``, else ``$RESKIT_CIFAR10``, else under
``datasets/cifar10/raw`` and ``datasets/cifar10`` (where ``torchvision.datasets.CIFAR10(root,
download=True)`` would put it). On CIFAR-10 the run is the paper's: 64k iterations (days on a CPU, hours
on a GPU); on the synthetic set it is chosen to finish well within 30 minutes on 2 AVX2 cores.

Writes ``DIR/degradation.png`` (error % against iterations: thin dashed training, bold test) and
``DIR/degradation.json`` (every number), and prints the final errors side by side. ``--quick``: a
smoke run of seconds (the test suite's), same outputs, no claim.
"""
import argparse
import json
import os
import shlex
import sys

# Unlike tools/train_cls.py this leaves OpenMP's waiting policy alone: these networks' layers are tiny
# (16-64 channels), and sleeping threads made the four-network step 1.35x slower on 2 idle AVX2 cores
# (594 against 441 ms). On cores shared with other work, OMP_WAIT_POLICY=PASSIVE may be the better choice.

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from classification import degradation as D  # noqa: E402
from classification.cifar import CIFAR10_ENV, find_cifar10, read_cifar10  # noqa: E402
from engine.launch import run_tool  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run of seconds (same outputs, no claim)")
    parser.add_argument("--out", default="runs/degradation", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--cifar", metavar="PATH",
                        help=f"CIFAR-10 archive or folder (default: ${CIFAR10_ENV}, else datasets/cifar10[/raw])")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic set even if CIFAR-10 is found")
    parser.add_argument("--iters", type=int, metavar="N",
                        help="iterations (learning rate /10 at 1/2 and 3/4 of them); default: 64000 on "
                             f"CIFAR-10, {D.SYNTHETIC_BUDGET.max_iter} on the synthetic set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be at least 1, got {args.iters}")
    return args


def main():
    args = parse_args()
    path = None if args.synthetic else find_cifar10(args.cifar)
    if path:
        budget = D.PAPER_BUDGET
        if args.quick:  # a few hundred images of the real set, the quick schedule
            budget = D.Budget(**{**D.QUICK_BUDGET.__dict__, "image_size": 32})
        data = D.cifar_data(read_cifar10(path), budget.train_images, budget.test_images)
    else:
        budget = D.QUICK_BUDGET if args.quick else D.SYNTHETIC_BUDGET
        if not args.synthetic:
            print(f"CIFAR-10 not found (--cifar, ${CIFAR10_ENV}, datasets/cifar10[/raw]): the synthetic set")
        data = D.synthetic_data(budget, args.seed)
    if args.iters:
        budget = budget.scaled(args.iters)
    print(f"data: {data.name}, {data.source}: {len(data.train_labels)} training / {len(data.test_labels)} test "
          f"images, {len(data.classes)} classes")
    print(f"schedule: {budget.max_iter} iterations of {budget.batch_size}, lr 0.1 /10 at {list(budget.lr_steps)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}",
          flush=True)

    results = D.train_networks(data, budget, seed=args.seed, log=lambda line: print(line, flush=True))
    results["command"] = "python tools/degradation.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    results["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "device": "cpu", "dtype": "float32"}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "degradation.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    png = D.plot_degradation(results, os.path.join(args.out, "degradation.png"))
    print(D.summary_table(results))
    print(f"{results['seconds'] / 60:.1f} min; wrote {png} and {os.path.join(args.out, 'degradation.json')}")
    return results


if __name__ == "__main__":
    run_tool(main)
