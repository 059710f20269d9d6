"""The "run" section every task's report shares: hardware and precision, what the data dropped, the
weight-load report, training curves from ``metrics.jsonl`` and the resolved config.

Everything is read from what a run already writes into its ``output_dir`` (``hardware.json``,
``metrics.jsonl``, ``config.yaml``), so a report can be built again later from the folder alone;
what exists only in memory (the dataset summaries, the weight-load report) comes in as ``notes``.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, List, Optional, Sequence, Tuple

from .report import Report

__all__ = ["add_run_section", "hardware_lines"]


def hardware_lines(plan: dict) -> List[str]:
    """The hardware and precision lines of a ``hardware.json`` (engine.hardware.HardwarePlan.as_dict)."""
    lines = [f"device: {plan.get('device', '?')} (CPU kernels: {plan.get('cpu_capability', '?')})",
             f"precision: {plan.get('precision', '?')} ({plan.get('precision_reason', '')})"]
    if "channels_last" in plan:
        layout = "channels-last" if plan["channels_last"] else "default (NCHW)"
        lines.append(f"memory layout: {layout} ({plan.get('layout_reason', '')})")
    if "num_workers" in plan:
        lines.append(f"loader workers: {plan['num_workers']}; compute threads: {plan.get('threads', '?')}")
    if plan.get("gradient_averaging"):
        lines.append(f"gradient averaging: {plan['gradient_averaging']}")
    return lines


def add_run_section(report: Report, run_dir: Optional[str] = None,
                    hardware: Optional[Sequence[str]] = None,
                    notes: Iterable[Tuple[str, str]] = (), title: str = "The run") -> Report:
    """Add the run's section to ``report``.

    ``run_dir``: an output_dir (its hardware.json, metrics.jsonl and config.yaml are read where they
    exist); ``hardware``: lines that replace hardware.json's (engine.hardware.HardwarePlan.lines);
    ``notes``: (heading, text) pairs shown as they are, e.g. ("validation set", "... dropped: ...")
    or ("weights", str(load_report)).
    """
    report.section(title)
    if hardware is None and run_dir and os.path.isfile(os.path.join(run_dir, "hardware.json")):
        with open(os.path.join(run_dir, "hardware.json"), "r", encoding="utf-8") as f:
            try:
                hardware = hardware_lines(json.load(f))
            except json.JSONDecodeError:
                hardware = None
    if hardware:
        report.heading("hardware and precision")
        report.pre("\n".join(hardware))
    for heading, text in notes:
        report.heading(heading)
        report.pre(text)
    metrics = os.path.join(run_dir, "metrics.jsonl") if run_dir else None
    if metrics and os.path.isfile(metrics):
        from .plotting import metrics_chart, read_metrics

        train, evals = read_metrics(metrics)
        if train or evals:
            report.heading("training curves")
            last = train[-1] if train else {}
            report.text(f"{len(train)} logged training steps up to iteration {last.get('iter', 0)}, "
                        f"{len(evals)} evaluations (from metrics.jsonl)", "note")
            report.image(metrics_chart(train, evals), "loss terms, learning rate and evaluation over iterations")
    config = os.path.join(run_dir, "config.yaml") if run_dir else None
    if config and os.path.isfile(config):
        with open(config, "r", encoding="utf-8") as f:
            report.pre(f.read(), summary="the run's config (config.yaml, resolved)")
    if run_dir:
        report.text(f"output folder: {os.path.abspath(run_dir)}", "note")
    return report
