"""The degradation experiment of He et al. (2015), Figure 6: plain nets get worse with depth, ResNets better.

Four CIFAR networks (:mod:`backbones.cifar`) — plain-20, plain-56, ResNet-20, ResNet-56 — are trained
with the recipe of the paper's section 4.2: SGD with learning rate 0.1 divided by 10 at 1/2 and 3/4
of the run (32k and 48k of 64k iterations on CIFAR-10), momentum 0.9, weight decay 1e-4, batch 128;
BN after every convolution, He initialisation, option A (zero-padded identity) shortcuts; inputs with
the per-pixel mean of the training set subtracted; training images padded by 4 pixels, randomly
cropped back to their size and flipped (the ``cifar`` recipe of :mod:`classification.transforms`).

Why a loop of its own rather than :class:`engine.trainer.Trainer`: the figure needs the *training
error* of every mini-batch (the trainer logs losses), and the four networks are trained in lockstep
on the very same augmented batches, so the comparison does not depend on data order and a shared
machine slows all four alike. Everything else comes from the library: the networks
(:func:`backbones.build_classifier`), the sampler (:class:`engine.sampler.TrainBatchSampler`), the
augmentation, the synthetic shapes (:class:`classification.data.SyntheticShapes`).

Training error is the error of the mini-batches as they are trained on (augmented, BN in training
mode), averaged over ``log_period`` iterations: what the paper's thin curves show. Test error is the
whole test set, BN in evaluation mode, every ``eval_period`` iterations.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from backbones import build_classifier
from engine.sampler import TrainBatchSampler, derive_seed

from .cifar import Cifar10

__all__ = ["NETWORKS", "LABELS", "Budget", "PAPER_BUDGET", "SYNTHETIC_BUDGET", "QUICK_BUDGET",
           "ExperimentData", "cifar_data", "synthetic_data", "train_networks", "verdict", "summary_table",
           "plot_degradation"]

CL = torch.channels_last
NETWORKS = ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56")
LABELS = {"cifar_plain20": "plain-20", "cifar_plain56": "plain-56",
          "cifar_resnet20": "ResNet-20", "cifar_resnet56": "ResNet-56"}


@dataclass(frozen=True)
class Budget:
    """How long to train and how much data. ``train_images``/``test_images``: the synthetic set's sizes,
    or (0 = all) how much of CIFAR-10 to use; ``image_size``: the synthetic images' side."""
    max_iter: int
    batch_size: int = 128
    log_period: int = 100  # iterations per point of the training-error curve
    eval_period: int = 1000  # iterations between test evaluations
    train_images: int = 0
    test_images: int = 0
    image_size: int = 32

    @property
    def lr_steps(self) -> Tuple[int, int]:
        """The paper divides the rate by 10 at 32k and 48k of 64k iterations: 1/2 and 3/4 of the run."""
        return self.max_iter // 2, self.max_iter * 3 // 4

    def scaled(self, max_iter: int) -> "Budget":
        """The same budget run for ``max_iter`` iterations (periods keep their share of the run)."""
        f = max_iter / self.max_iter
        return Budget(max_iter, self.batch_size, max(1, round(self.log_period * f)),
                      max(1, round(self.eval_period * f)), self.train_images, self.test_images, self.image_size)


# The paper's schedule on CIFAR-10 (all 50k training and 10k test images).
PAPER_BUDGET = Budget(max_iter=64000, log_period=200, eval_period=2000)
# The built-in synthetic set: chosen to finish within 30 minutes on 2 AVX2 cores (docs/paper.md).
SYNTHETIC_BUDGET = Budget(max_iter=2500, log_period=50, eval_period=125, train_images=10000, test_images=2000,
                          image_size=16)
# A smoke run of seconds (the test suite): every code path, no claim.
QUICK_BUDGET = Budget(max_iter=6, batch_size=32, log_period=2, eval_period=3, train_images=256, test_images=64,
                      image_size=16)


# --------------------------------------------------------------------------------------------------
# Data: whole sets in memory as uint8 arrays (CIFAR-10 is 150 MB)
# --------------------------------------------------------------------------------------------------


@dataclass
class ExperimentData:
    train_images: np.ndarray  # RGB uint8 [N, H, W, 3]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: List[str]
    name: str  # "CIFAR-10" or "synthetic shapes"
    source: str  # where it came from


def _first(images: np.ndarray, labels: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    return (images[:n], labels[:n]) if n else (images, labels)


def cifar_data(cifar: Cifar10, train_images: int = 0, test_images: int = 0) -> ExperimentData:
    """CIFAR-10 as read by :func:`classification.cifar.read_cifar10` (the first n images of each
    split when n > 0, for smoke runs)."""
    x, y = _first(cifar.train_images, cifar.train_labels, train_images)
    tx, ty = _first(cifar.test_images, cifar.test_labels, test_images)
    return ExperimentData(x, y, tx, ty, list(cifar.classes), "CIFAR-10", cifar.source)


def synthetic_data(budget: Budget, seed: int = 0, supersample: int = 4) -> ExperimentData:
    """The built-in shapes (one of 8 shapes on a textured background; class = the shape), drawn at
    ``supersample`` times ``budget.image_size`` and shrunk with area averaging: anti-aliased edges
    keep the shape legible at 16 pixels (drawn at 16, a hexagon and a circle are a few jagged pixels
    apart). The test set is drawn from another seed."""
    import cv2

    from .data import SyntheticShapes

    size = budget.image_size

    def draw(n: int, part: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        shapes = SyntheticShapes(n, size * supersample, seed=derive_seed(seed, part))
        images = np.stack([cv2.resize(shapes.load(i), (size, size), interpolation=cv2.INTER_AREA) for i in range(n)])
        return images, shapes.labels.copy(), list(shapes.classes)

    train_x, train_y, classes = draw(budget.train_images, 0)
    test_x, test_y, _ = draw(budget.test_images, 1)
    return ExperimentData(train_x, train_y, test_x, test_y, classes, "synthetic shapes",
                          f"built-in ({budget.train_images} + {budget.test_images} images of {size}x{size}, "
                          f"{len(classes)} classes)")


def augmentation_pad(image_size: int) -> int:
    """The paper pads 32-pixel images by 4: the same share of smaller images (2 pixels at 16)."""
    return max(1, round(4 * image_size / 32))


def _train_transform(image_size: int):
    """The paper's CIFAR augmentation as the library's ``cifar`` recipe: zero padding
    (:func:`augmentation_pad`), random crop back to ``image_size``, horizontal flip; -> float
    [3, H, W] in [0, 1]."""
    from .config import ClsDataConfig
    from .transforms import build_train_transform

    return build_train_transform(ClsDataConfig(recipe="cifar", crop_size=image_size, resize_size=image_size,
                                               pad=augmentation_pad(image_size), flip=True, pca_lighting=0.0))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------------------------------
# Training the four networks in lockstep
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _test_error(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    wrong = sum(int((model(images[i:i + batch]).argmax(1) != labels[i:i + batch]).sum())
                for i in range(0, len(images), batch))
    model.train()
    return 100.0 * wrong / len(images)


def train_networks(data: ExperimentData, budget: Budget, networks: Sequence[str] = NETWORKS, seed: int = 0,
                   log: Callable[[str], None] = print) -> dict:
    """Train ``networks`` on ``data`` for ``budget``; returns the curves and final errors (JSON-ready)."""
    n_classes = len(data.classes)
    mean = _to_tensor(data.train_images).mean(0)  # the per-pixel mean image [3, H, W] (paper 4.2)
    test_x = (_to_tensor(data.test_images) - mean).contiguous(memory_format=CL)
    test_y = torch.from_numpy(data.test_labels)
    transform = _train_transform(data.train_images.shape[1])
    sampler = TrainBatchSampler(len(data.train_labels), budget.batch_size, rank=0, world_size=1, seed=seed)

    models, optimizers, schedulers = {}, {}, {}
    for k, name in enumerate(networks):
        torch.manual_seed(derive_seed(seed, 100 + k))  # He init (backbones.resnet), its own seed per network
        # channels-last: 1.3x faster on CPU for these small layers (345 against 441 ms for the four steps)
        models[name] = build_classifier(name, n_classes, shortcut="A").to(memory_format=CL).train()
        optimizers[name] = torch.optim.SGD(models[name].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        schedulers[name] = torch.optim.lr_scheduler.MultiStepLR(optimizers[name], list(budget.lr_steps), 0.1)
    curves = {name: {"train": {"iter": [], "error": []}, "test": {"iter": [], "error": []}} for name in networks}
    wrong = {name: 0 for name in networks}
    seconds = {name: 0.0 for name in networks}
    seen, start = 0, time.perf_counter()

    for it, samples in zip(range(1, budget.max_iter + 1), sampler):
        index = [i for i, _ in samples]
        x = (torch.stack([transform(data.train_images[i], s) for i, s in samples]) - mean).contiguous(memory_format=CL)
        y = torch.from_numpy(data.train_labels[index])
        seen += len(index)
        for name in networks:
            t = time.perf_counter()
            logits = models[name](x)
            loss = F.cross_entropy(logits, y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{LABELS.get(name, name)}: loss is {loss.item()} at iteration {it}")
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            schedulers[name].step()
            wrong[name] += int((logits.detach().argmax(1) != y).sum())
            seconds[name] += time.perf_counter() - t
        if it % budget.log_period == 0 or it == budget.max_iter:
            for name in networks:
                curves[name]["train"]["iter"].append(it)
                curves[name]["train"]["error"].append(100.0 * wrong[name] / seen)
                wrong[name] = 0
            seen = 0
        if it % budget.eval_period == 0 or it == budget.max_iter:
            for name in networks:
                t = time.perf_counter()
                curves[name]["test"]["iter"].append(it)
                curves[name]["test"]["error"].append(_test_error(models[name], test_x, test_y))
                seconds[name] += time.perf_counter() - t
            elapsed = time.perf_counter() - start
            log(f"iter {it}/{budget.max_iter} lr {schedulers[networks[0]].get_last_lr()[0]:g}  "
                + "  ".join(f"{LABELS.get(n, n)} {curves[n]['train']['error'][-1]:.1f}/{curves[n]['test']['error'][-1]:.1f}"
                            for n in networks)
                + f"  (train/test error %)  {elapsed / 60:.1f} min, eta {elapsed / it * (budget.max_iter - it) / 60:.1f} min")

    results = {
        "dataset": {"name": data.name, "source": data.source, "train_images": int(len(data.train_labels)),
                    "test_images": int(len(data.test_labels)), "image_size": int(data.train_images.shape[1]),
                    "classes": list(data.classes)},
        "recipe": {"optimizer": "SGD", "base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                   "batch_size": budget.batch_size, "max_iter": budget.max_iter, "lr_steps": list(budget.lr_steps),
                   "gamma": 0.1, "augmentation": f"{augmentation_pad(data.train_images.shape[1])}-pixel zero padding, "
                   "random crop, horizontal flip",
                   "input": "per-pixel training mean subtracted", "norm": "BN", "init": "He (kaiming normal, fan_out)",
                   "shortcut": "A (zero-padded identity)", "seed": seed},
        "budget": asdict(budget),
        "networks": {},
        "seconds": time.perf_counter() - start,
    }
    for name in networks:
        c = curves[name]
        results["networks"][name] = {
            "label": LABELS.get(name, name), "plain": "plain" in name,
            "parameters": sum(p.numel() for p in models[name].parameters()),
            "final_train_error": c["train"]["error"][-1], "final_test_error": c["test"]["error"][-1],
            "seconds": seconds[name], "train": c["train"], "test": c["test"]}
    results["verdict"] = verdict(results)
    return results


# --------------------------------------------------------------------------------------------------
# Reading the result: the paper's two claims, a table, the figure
# --------------------------------------------------------------------------------------------------


def verdict(results: dict) -> Dict[str, Optional[bool]]:
    """The paper's claims on the final training errors (None when a network was not trained)."""
    e = {n: r["final_train_error"] for n, r in results["networks"].items()}

    def above(a, b):
        return (e[a] > e[b]) if a in e and b in e else None
    return {"plain56_above_plain20": above("cifar_plain56", "cifar_plain20"),  # degradation
            "resnet56_below_plain56": above("cifar_plain56", "cifar_resnet56"),  # residual learning fixes it
            "resnet56_below_resnet20": above("cifar_resnet20", "cifar_resnet56")}  # and gains from depth


def summary_table(results: dict) -> str:
    """Final training and test errors side by side, then the verdict, as printed by the tool."""
    nets = results["networks"]
    names = list(nets)
    width = max(10, *(len(nets[n]["label"]) + 2 for n in names))
    head = f"{'final error (%)':<16}" + "".join(f"{nets[n]['label']:>{width}}" for n in names)
    rows = [head, "-" * len(head)]
    for key, title in (("final_train_error", "training"), ("final_test_error", "test")):
        rows.append(f"{title:<16}" + "".join(f"{nets[n][key]:>{width}.2f}" for n in names))
    words = {True: "yes", False: "NO", None: "n/a"}
    v = results["verdict"]
    rows.append(f"plain-56 above plain-20 (degradation): {words[v['plain56_above_plain20']]};  "
                f"ResNet-56 below plain-56: {words[v['resnet56_below_plain56']]};  "
                f"ResNet-56 below ResNet-20: {words[v['resnet56_below_resnet20']]}")
    return "\n".join(rows)


_COLORS = {20: "tab:orange", 56: "tab:red"}


def plot_degradation(results: dict, path: str) -> str:
    """Figure 6 of the paper: error % against iterations, thin dashed training, bold test; plain nets
    on the left, ResNets on the right, the same y axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    nets = results["networks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    late = []  # errors after the first tenth of the run: the y range the eye needs (the paper's is 0-20%)
    max_iter = results["recipe"]["max_iter"]
    for ax, plain in zip(axes, (True, False)):
        for name, r in nets.items():
            if r["plain"] != plain:
                continue
            depth = int("".join(ch for ch in name if ch.isdigit()))
            color = _COLORS.get(depth, None)
            ax.plot(r["train"]["iter"], r["train"]["error"], "--", lw=0.9, color=color)
            ax.plot(r["test"]["iter"], r["test"]["error"], "-", lw=2.2, color=color,
                    label=f"{r['label']}  (train {r['final_train_error']:.1f}%, test {r['final_test_error']:.1f}%)")
            for curve in (r["train"], r["test"]):
                late += [e for i, e in zip(curve["iter"], curve["error"]) if i > max_iter / 10]
        for step in results["recipe"]["lr_steps"]:
            ax.axvline(step, color="0.85", lw=0.8, zorder=0)
        ax.set_title("plain networks" if plain else "residual networks (ResNets)")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], ls="--", lw=0.9, color="0.3"), Line2D([], [], ls="-", lw=2.2, color="0.3")]
        labels += ["training error (dashed)", "test error (bold)"]
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    axes[0].set_ylabel("error (%)")
    top = max(late) if late else 100.0
    axes[0].set_ylim(0, min(100.0, top * 1.25 + 1.0))
    d = results["dataset"]
    fig.suptitle(f"{d['name']}: {d['train_images']} training images of {d['image_size']}x{d['image_size']}, "
                 f"{max_iter} iterations of {results['recipe']['batch_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
