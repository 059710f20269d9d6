"""The trainer's evaluation: evaluating the current (or EMA) weights without shifting the training's
random streams, tracking the primary metric (``model_best.pth``, the plateau schedule), ``--eval-only``
and the final report. A part of :class:`engine.trainer.Trainer`, which inherits it.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Optional

import torch
from torch import nn

from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .dist import broadcast_object, is_main_process
from .hardware import autocast
from .image_io import decoder_messages_named
from .jsonio import write_json
from .logger import MetricsLogger
from .trainer_checkpoints import load_model_weights

logger = logging.getLogger(__name__)


def lookup_metric(results: dict, dotted: str) -> Optional[float]:
    """``results["bbox"]["AP"]`` for ``"bbox.AP"``; None when absent."""
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


class TrainerEvaluation:
    """Evaluation for :class:`engine.trainer.Trainer`: it uses the trainer's ``cfg``, ``task``,
    ``model``, ``ema``, ``device``, ``precision``, ``scheduler``, ``hardware``, ``iteration``,
    ``best_metric`` and ``report_dir``, and ``_weights_state()`` of
    :class:`engine.trainer_checkpoints.TrainerCheckpoints`."""

    def evaluate(self) -> dict:
        """Evaluate the current weights (the EMA weights when ``solver.ema``); full results on
        every rank."""
        return self._evaluate_model(self.ema.module if self.ema is not None else self.model)

    def _evaluate_model(self, model: nn.Module) -> dict:
        # Evaluation must not shift the training's random streams: a run evaluated at other moments
        # (or resumed after an evaluation) would otherwise diverge.
        rng = get_rng_state()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.precision):
                results = self.task.evaluate(model)
        finally:
            model.train(was_training)
            set_rng_state(rng)
        return broadcast_object(results if is_main_process() else None) or {}

    def _evaluate_and_track(self, metrics: Optional[MetricsLogger] = None) -> dict:
        results = self.evaluate()
        if metrics is not None:
            metrics.log_eval(self.iteration, results)
        metric = lookup_metric(results, self.task.primary_metric)
        if metric is None:
            if self.cfg.solver.lr_schedule == "plateau":
                raise KeyError(f"the evaluation has no '{self.task.primary_metric}' for the plateau "
                               f"schedule (it returned: {sorted(results)})")
            if not self._warned_missing_metric and is_main_process():
                warnings.warn(f"the evaluation has no '{self.task.primary_metric}': no model_best.pth")
            self._warned_missing_metric = True
            return results
        self.scheduler.report(metric)
        if self.best_metric is None or metric > self.best_metric:
            self.best_metric = metric
            if is_main_process():
                state = self._weights_state()
                state["metric"] = {self.task.primary_metric: metric}
                save_checkpoint(os.path.join(self.cfg.output_dir, "model_best.pth"), state)
        return results

    def evaluate_only(self, weights: Optional[str] = None) -> dict:
        """Load ``weights`` (default: ``output_dir/model_final.pth``; a reskit checkpoint: its
        "model_ema" when ``solver.ema``, else "model") into the model, evaluate, and write
        ``results_eval.json`` in ``output_dir`` (rank 0). Full results on every rank."""
        weights = weights or os.path.join(self.cfg.output_dir, "model_final.pth")
        loader = getattr(self.task, "load_weights", None)
        if loader is not None:
            loader(self.model, weights)
        else:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"weights file not found: {weights!r}: set model.weights to a "
                                        "model_final.pth / model_best.pth / checkpoint of a run")
            state = load_checkpoint(weights)
            key = "model_ema" if self.ema is not None and "model_ema" in state else "model"
            load_model_weights(self.model, state.get(key, state), weights)
        with decoder_messages_named():  # libjpeg's "Corrupt JPEG data" names its file (engine.image_io)
            results = self._evaluate_model(self.model)
        if is_main_process():
            os.makedirs(self.cfg.output_dir, exist_ok=True)
            write_json(os.path.join(self.cfg.output_dir, "results_eval.json"), results)
            write_json(os.path.join(self.cfg.output_dir, "hardware.json"), self.hardware.as_dict())
            self.write_report(results)
        return results

    def _wants_report(self) -> bool:
        return (getattr(self.task, "write_report", None) is not None and getattr(self.cfg.test, "report", False)
                and is_main_process())

    def write_report(self, results: dict) -> Optional[str]:
        """``output_dir/report/index.html`` (engine.report), rank 0, when ``test.report`` and the task
        has ``write_report(report, results)``: the task's sections, then the run's (engine.report_run:
        hardware, the task's ``report_notes()``, curves, config). Returns its path, or None. A report
        that fails is a warning with the reason: the run's results are written already."""
        if not self._wants_report():
            return None
        writer = self.task.write_report
        from .report import Report, frozen_heap
        from .report_run import add_run_section

        start = time.perf_counter()
        max_mb = getattr(self.cfg.test, "report_max_mb", 20.0)
        try:
            with frozen_heap():
                report = Report(self.report_dir or os.path.join(self.cfg.output_dir, "report"), os.path.basename(
                    os.path.abspath(self.cfg.output_dir)), max_mb=max_mb,
                    limit_hint=f"test.report_max_mb={max_mb:g} now; set it higher")
                writer(report, results)
                notes = getattr(self.task, "report_notes", None)
                add_run_section(report, self.cfg.output_dir, self.hardware.lines(), notes() if notes else ())
                path = report.write()
        except Exception:  # noqa: BLE001 - the run is done and saved; say why its report is missing
            logger.exception("the report could not be written (the run's results and weights are saved)")
            return None
        logger.info(f"report: {path} ({time.perf_counter() - start:.1f} s)")
        return path
