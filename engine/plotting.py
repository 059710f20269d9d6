"""Curves of a run from its ``metrics.jsonl``: loss terms, learning rate and evaluation metrics."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

from .logger import PRIMARY_KEYS, _flatten

# Keys of a training record that are not loss terms.
_NOT_LOSSES = {"iter", "epoch", "lr", "time", "data_time", "eta_seconds", "grad_norm", "skipped"}


def read_metrics(path: str) -> Tuple[List[dict], List[dict]]:
    """(training records, evaluation records) of a metrics.jsonl; lines cut by a kill are skipped."""
    train, evals = [], []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            (evals if "eval" in record else train).append(record)
    return train, evals


def eval_curves(evals: List[dict], max_curves: int = 8) -> Dict[str, List[Tuple[int, float]]]:
    """``{"bbox/AP": [(iter, value), ...], ...}``: every task's primary numbers (bbox and segm AP /
    AP50 / AP75, mIoU, top-1 ...: engine.logger.PRIMARY_KEYS), then other numbers up to
    ``max_curves``; per-category and per-class tables are left out (too many lines to read)."""
    curves: Dict[str, List[Tuple[int, float]]] = {}
    for r in evals:
        flat = {k: v for k, v in _flatten(r["eval"]).items() if "per_" not in k}
        primary = [k for k in flat if k.rsplit("/", 1)[-1] in PRIMARY_KEYS]
        for k in primary + [k for k in flat if k not in primary]:
            if k not in curves and k not in primary and len(curves) >= max_curves:
                continue
            curves.setdefault(k, []).append((r["iter"], flat[k]))
    return curves


def loss_curves(train: List[dict]) -> Dict[str, List[Tuple[int, float]]]:
    """``{"loss": [(iter, value), ...], "loss_cls": ...}``: every numeric term of the training records."""
    losses: Dict[str, List[Tuple[int, float]]] = {}
    for r in train:
        for k, v in r.items():
            if k not in _NOT_LOSSES and isinstance(v, (int, float)) and not isinstance(v, bool):
                losses.setdefault(k, []).append((r["iter"], v))
    return losses


def metrics_chart(train: List[dict], evals: List[dict], max_eval_curves: int = 8):
    """The three panels of :func:`metrics_figure` (loss terms, learning rate, evaluation curves) as an
    :class:`engine.svg_chart.Chart`, what the reports show (written as SVG text, without matplotlib)."""
    from .svg_chart import TAB10, Chart

    chart = Chart((420, 300))
    dots = len(train) <= 30  # a short run: a line through few points may be invisible
    panel = chart.panel("training loss", "iteration")
    for i, (name, points) in enumerate(loss_curves(train).items()):
        panel.line(*zip(*points), TAB10[i % 10], width=2.0 if name == "loss" else 1.2, label=name, markers=dots)
    panel = chart.panel("learning rate", "iteration")
    lr = [(r["iter"], r["lr"]) for r in train if "lr" in r]
    if lr:
        panel.line(*zip(*lr), TAB10[0], markers=dots)
    panel = chart.panel("evaluation (%)", "iteration")
    for i, (name, points) in enumerate(eval_curves(evals, max_eval_curves).items()):
        panel.line(*zip(*points), TAB10[i % 10], label=name, markers=True)
    return chart


def metrics_figure(train: List[dict], evals: List[dict], title: str = "", max_eval_curves: int = 8):
    """A matplotlib figure of three panels: training loss terms, learning rate, evaluation curves
    (see :func:`eval_curves`). The caller saves and closes it."""
    from .report import figure

    losses = loss_curves(train)
    curves = eval_curves(evals, max_eval_curves)

    fig, axes = figure(16, 4.5, ncols=3)
    dots = "." if len(train) <= 30 else None  # a short run: a line through few points may be invisible
    for name, points in losses.items():
        axes[0].plot(*zip(*points), label=name, linewidth=2.0 if name == "loss" else 1.0, marker=dots)
    axes[0].set_title("training loss")
    if train:
        axes[1].plot([r["iter"] for r in train], [r["lr"] for r in train], marker=dots)
    axes[1].set_title("learning rate")
    for name, points in curves.items():
        axes[2].plot(*zip(*points), marker="o", label=name)
    axes[2].set_title("evaluation (%)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.12, top=0.88 if title else 0.93, wspace=0.18)
    return fig


def plot_metrics(run_dir: str, out: Optional[str] = None, max_eval_curves: int = 8) -> str:
    """Draw ``run_dir/metrics.jsonl`` to a PNG (default ``run_dir/metrics.png``); returns its path.

    Evaluation curves: every task's primary numbers (bbox and segm AP / AP50 / AP75, mIoU, top-1 ...:
    engine.logger.PRIMARY_KEYS), then other numeric results up to ``max_eval_curves``, skipping
    per-category and per-class tables (too many lines to read).
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir} the output_dir of a run?")
    train, evals = read_metrics(path)
    out = out or os.path.join(run_dir, "metrics.png")
    fig = metrics_figure(train, evals, os.path.basename(os.path.abspath(run_dir)), max_eval_curves)
    fig.savefig(out, dpi=100)
    return out
