"""What a task gives the trainer: the :class:`Task` protocol (see engine/trainer.py for the loop)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset


@runtime_checkable
class Task(Protocol):
    """What a task gives the trainer (duck-typed: any object with these members works).

    Required
    --------
    primary_metric: str
        Dotted key into the results of :meth:`evaluate`, higher is better ("top1", "bbox.AP").
        Drives the plateau schedule and ``model_best.pth``.
    num_train_samples: int
        Length of the training set; turns ``solver.max_epochs`` into iterations (read only then,
        and not when ``training`` is False).
    build_model() -> nn.Module
        Called once on every rank, after the seeds are set; the trainer moves it to the device,
        converts it to channels-last, wraps it in DDP and (optionally) compiles it.
    train_dataset() -> Dataset
        ``__getitem__`` receives a pair ``(index, sample_seed)``: draw every random augmentation
        from ``sample_seed`` (e.g. ``np.random.default_rng(sample_seed)``), never from global RNGs,
        so a sample looks the same whatever the number of workers or ranks, and after a resume.
        It may return ``None`` for a sample it chose to skip (the batch goes on without it and the
        skip is counted), or raise :class:`engine.data.DataError` with a one-line message naming the
        file / record and what to do (the run stops with that line, exit code 1).
    collate(samples: list) -> batch
        Turns a list of samples into a batch; runs in the loader workers. The trainer moves the
        batch to the device (tensors inside lists / tuples / dicts; 4-D float tensors become
        channels-last when ``solver.channels_last``).
    group_ids() -> Optional[Sequence[int]]
        One group id per training sample (aspect-ratio groups for detection); every batch then
        holds samples of one group. ``None``: no grouping.
    training_step(model, batch) -> dict[str, Tensor]
        Forward pass and losses, called inside autocast with the DDP-wrapped (possibly compiled)
        model in train mode. Returns the scalar loss terms; the trainer backpropagates their sum
        (so return loss terms only) and logs each term. Return the same keys at every step and on
        every rank (a term that does not apply to a batch is a zero, not a missing key): the terms
        are averaged over ranks each step.
    evaluate(model) -> dict
        Called on every rank with the bare (or EMA) model in eval mode under ``torch.no_grad()``;
        each rank evaluates its shard (``engine.sampler.InferenceSampler``,
        ``engine.data.build_inference_loader``) and the results are gathered to rank 0
        (``engine.sampler.gather_in_order``). Returns the full results on rank 0, numbers in
        percent, nested as they should appear in results.json (``{"top1": .., "top5": ..}``,
        ``{"bbox": {"AP": ..}}``); other ranks may return ``{}``.
    checkpoint_meta() -> dict
        Plain data (str, numbers, lists, dicts) saved in every checkpoint under "meta": input
        normalisation, class names, anything a predictor needs to use the weights.

    Optional
    --------
    param_lr_mults(model) -> dict[str, float]
        Parameter-name prefix -> learning-rate multiplier (``{"backbone": 0.1}``); the longest
        matching prefix wins.
    find_unused_parameters: bool
        Passed to DistributedDataParallel (default False).
    has_validation: bool
        False when the config gives no validation data (``data.val: []``, e.g. training on
        train+val): the trainer then trains without evaluating, says so once, and writes no
        ``results.json`` nor ``model_best.pth`` (default True).
    training: bool
        False for a task built only to evaluate (``--eval-only``, ``eval_coco.py``): the trainer
        then never asks for ``num_train_samples``, so no training set is needed (default True).
    load_weights(model, path) -> None
        How ``evaluate_only`` loads a weights file; default: the "model" (or "model_ema" when
        EMA is enabled) entry of a reskit checkpoint, strictly.
    write_report(report, results) -> None
        Rank 0, after the final evaluation (and ``evaluate_only``) when ``test.report``: add the
        task's sections to ``report`` (an :class:`engine.report.Report` for ``output_dir/report``)
        from ``results`` and whatever the last ``evaluate`` kept; the trainer then adds the run's
        section (engine.report_run) and writes the page.
    report_notes() -> list[tuple[str, str]]
        (heading, text) pairs for the run's section: what the datasets dropped and why, the
        weight-load report.
    """

    primary_metric: str
    num_train_samples: int

    def build_model(self) -> nn.Module: ...

    def train_dataset(self) -> Dataset: ...

    def collate(self, samples: list) -> Any: ...

    def group_ids(self) -> Optional[Sequence[int]]: ...

    def training_step(self, model: nn.Module, batch: Any) -> Dict[str, torch.Tensor]: ...

    def evaluate(self, model: nn.Module) -> dict: ...

    def checkpoint_meta(self) -> dict: ...
