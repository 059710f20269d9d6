"""The training loop every task shares: iterations, DDP, AMP, accumulation, checkpoints, evaluation.

A task (classification, detection, segmentation) hands the trainer an object that follows
:class:`engine.task.Task`; the trainer owns everything else: the process group, the sampler and its
saved position, the optimizer and schedule, mixed precision, EMA, checkpoints, logging and resuming.

Usage (what ``tools/train_*.py`` do)::

    def main():
        args = default_argument_parser("train X").parse_args()
        cfg = parse_config(MyTaskConfig, args.config, args.overrides)
        trainer = Trainer(cfg, MyTask(cfg))
        if args.eval_only:
            trainer.evaluate_only(cfg.model.weights)
        else:
            trainer.train(resume=args.resume)

    run_tool(main)   # engine.launch: bad data / non-finite loss -> one line, exit 1

A run writes into ``output_dir`` (rank 0 only): ``config.yaml``, ``metrics.jsonl``, TensorBoard
events, ``checkpoints/model_{iter:07d}.pth`` (the last ``solver.keep_checkpoints``), ``model_best.pth``
(when the primary metric improves), ``model_final.pth`` and ``results.json``.

Iterations count optimizer steps; "checkpoint at iteration N" holds the state after N steps.

This file holds the loop (set-up, iterations, interruption, the end of training); the trainer's
evaluation, ``--eval-only`` and report are :class:`engine.trainer_eval.TrainerEvaluation`, what it
saves and how it resumes :class:`engine.trainer_checkpoints.TrainerCheckpoints`, both inherited.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import time
import warnings
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .agent import exit_with_agent
from .checkpoint import Checkpointer, save_checkpoint, set_rng_state
from .config import ConfigError, DistConfig, overridden_keys
from .data import DataError, build_train_loader, move_to_device, seed_everything, set_deterministic, user_message
from .dist import get_rank, get_world_size, init_distributed, is_main_process, reduce_sum_tensor
from .ema import ModelEMA
from .grad_reduce import install_grad_reduce
from .hardware import autocast, plan_run
from .interrupt import GracefulInterrupt, TrainingInterrupted, eval_only_command, resume_command
from .jsonio import write_json
from .image_io import name_decoder_messages
from .logger import MetricsLogger, setup_logging
from .optim import build_optimizer
from .sampler import TrainBatchSampler, derive_seed
from .schedule import SCALED_KEYS, build_lr_scheduler, scale_for_batch, schedule_warnings
from .task import Task
from .trainer_checkpoints import TrainerCheckpoints, load_model_weights  # noqa: F401 - importable from here
from .trainer_eval import TrainerEvaluation, lookup_metric

__all__ = ["Task", "Trainer", "lookup_metric"]

logger = logging.getLogger(__name__)


def tracks_running_stats(model: nn.Module) -> bool:
    """True when ``model`` has norm layers that update running statistics in training (batch norm):
    the buffers DDP must broadcast from rank 0 to keep the ranks' models the same."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
               for m in model.modules())


def describe_schedule(given, runs, num_train: int, typed=frozenset()) -> str:
    """One line on how many iterations run and where the number came from: ``given`` is the config's
    solver, ``runs`` the one after the batch rescaling and ``solver.max_epochs``. A ``max_iter`` that
    ``max_epochs`` replaced is named, so a user who set it sees why it did not apply."""
    text = f"{runs.max_iter} iterations of {runs.ims_per_batch} images, base_lr {runs.base_lr:g}"
    if given.max_epochs > 0:
        text += (f" (from solver.max_epochs {given.max_epochs} over {num_train} training samples; it "
                 f"replaces solver.max_iter, {given.max_iter} here: set solver.max_epochs=0 to train by "
                 f"max_iter)")
    if given.reference_batch > 0 and given.reference_batch != given.ims_per_batch:
        k = given.ims_per_batch / given.reference_batch
        scaled = "steps" if given.max_epochs > 0 else "iterations, steps"  # epochs already fit the batch
        text += (f"; the schedule was written for batches of {given.reference_batch} "
                 f"(solver.reference_batch): LR x{k:g}, {scaled}, warm-up and periods x{1 / k:g}")
        kept = [key for key in SCALED_KEYS if key in typed]
        if kept:
            text += f", except {', '.join(kept)} given on the command line, taken as typed"
    return text


class Trainer(TrainerCheckpoints, TrainerEvaluation):
    """Trains ``task`` as ``cfg`` says.

    ``cfg`` is a task config dataclass with at least: ``output_dir``, ``seed``, ``deterministic``,
    ``solver`` (SolverConfig), ``test`` (TestConfig), ``logging`` (LoggingConfig) and
    ``data.num_workers``. The schedule is rescaled for the batch first (``schedule.scale_for_batch``)
    and ``solver.max_epochs`` turned into ``solver.max_iter``; ``self.cfg`` is the config that runs.

    After construction: ``self.model`` (bare model on the device), ``self.train_model`` (what
    ``training_step`` gets: DDP-wrapped and/or compiled), ``self.optimizer``, ``self.scheduler``,
    ``self.scaler``, ``self.ema`` (or None), ``self.device``, ``self.max_iter``.
    """

    def __init__(self, cfg, task: Task):
        typed = overridden_keys(cfg)  # command-line values are for the batch that runs: not rescaled
        solver, test = scale_for_batch(cfg.solver, cfg.test, typed)
        # The training set is read only to turn max_epochs into iterations, and not for a task built
        # to evaluate (Task.training False: --eval-only, eval_coco.py), which must not need it.
        num_train = 0
        if solver.max_epochs > 0 and getattr(task, "training", True):
            num_train = task.num_train_samples
            iters = math.ceil(solver.max_epochs * num_train / solver.ims_per_batch)
            solver = dataclasses.replace(solver, max_iter=max(1, iters))
        self._schedule = describe_schedule(cfg.solver, solver, num_train, typed)  # printed when training starts
        self.cfg = cfg = dataclasses.replace(cfg, solver=solver, test=test)
        self.task = task
        # detectron2 trains without evaluation when there is no test set; so do we, saying so
        self._has_validation = bool(getattr(task, "has_validation", True))
        self.max_iter = solver.max_iter
        set_deterministic(cfg.deterministic)
        dist_cfg = getattr(cfg, "dist", None) or DistConfig()  # a schema without RunConfig's header: defaults
        exit_with_agent()  # under torchrun: end with the agent (engine.agent)
        self.device = init_distributed(dist_cfg.backend, dist_cfg.timeout)
        setup_logging(cfg.output_dir, get_rank())
        # precision, memory layout, loader workers and compute threads for this machine (engine.hardware)
        self.hardware = plan_run(solver.amp, solver.channels_last, cfg.data.num_workers, self.device)
        self.precision, self.channels_last = self.hardware.precision, self.hardware.channels_last
        if is_main_process():
            self.hardware.log(logger)
        self._check_config()

        seed_everything(cfg.seed)  # same seed on every rank: identical model init and task set-up
        model = task.build_model().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        mults_fn = getattr(task, "param_lr_mults", None)
        self.optimizer = build_optimizer(model, solver, mults_fn(model) if mults_fn else None)
        self.scheduler = build_lr_scheduler(self.optimizer, solver, self.max_iter)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.grad_scaler)
        self.ema = ModelEMA(model, solver.ema_decay) if solver.ema else None
        self.train_model: nn.Module = model
        self.grad_reduce: Optional[str] = None  # how DDP averages the gradients (hardware.json)
        if get_world_size() > 1:
            # gradient_as_bucket_view: the gradients live in DDP's all-reduce buckets instead of being
            # copied in and out of them every step (same numbers, one gradient-sized copy less): the
            # demo's semantic FPN step (two one-thread CPU processes, 7.2M parameters) 0.224 -> 0.215 s
            # Buffers: DDP copies rank 0's to every rank before each forward, which only batch norm's
            # running statistics need; frozen norms and constant buffers are the same on every rank
            # already, and the copy is one more blocking collective a step (the demo's semantic FPN,
            # FrozenBN, AVX2, profiled: 206 -> 198 ms a step, same weights). torch 2.14 names the
            # argument forward_sync_buffers (still one sync at init) and warns on broadcast_buffers.
            ddp_args = inspect.signature(DistributedDataParallel.__init__).parameters
            buffers = "forward_sync_buffers" if "forward_sync_buffers" in ddp_args else "broadcast_buffers"
            self.train_model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(task, "find_unused_parameters", False),
                gradient_as_bucket_view=True, **{buffers: tracks_running_stats(model)})
            # CPU ranks on one machine: gradients averaged in shared memory, not gloo's sockets
            self.grad_reduce = install_grad_reduce(self.train_model, dist_cfg.grad_reduce, self.device)
            if is_main_process():
                logger.info(f"gradient averaging: {self.grad_reduce}")
        if solver.compile:
            self.train_model = torch.compile(self.train_model)
        self.checkpointer = Checkpointer(cfg.output_dir, keep=solver.keep_checkpoints)
        self.iteration = 0
        self.best_metric: Optional[float] = None
        self.skipped_total = 0  # samples the dataset skipped (returned None), over all ranks
        self.last_checkpoint: Optional[str] = None
        self._warned_missing_metric = False
        self.report_dir: Optional[str] = None  # where write_report writes (default output_dir/report)

    def _check_config(self) -> None:
        s, t = self.cfg.solver, self.cfg.test
        if self.precision.name == "fp16" and self.device.type != "cuda":
            raise ConfigError("solver.amp: fp16 needs a CUDA GPU (it relies on a grad scaler); "
                              "use bf16 or off on the CPU")
        if s.lr_schedule == "plateau" and t.eval_period <= 0:
            raise ConfigError("solver.lr_schedule: plateau watches the validation metric; "
                              "set test.eval_period > 0")
        if s.lr_schedule == "plateau" and not self._has_validation:
            raise ConfigError("solver.lr_schedule: plateau watches the validation metric, and data.val is "
                              "empty; give data.val or another schedule")
        # the sampler checks that the batch splits over ranks and accumulation steps
        TrainBatchSampler(1, s.ims_per_batch, 0, get_world_size(), accumulate=s.accumulate)

    # ---------------------------------------------------------------------------------- training

    def train(self, resume: bool = False, allow_config_change: bool = False) -> dict:
        """Train to ``solver.max_iter`` (from the newest loadable checkpoint when ``resume``) and
        return the final evaluation (full results on every rank). A resume whose config differs
        from the run's beyond engine.resume.FREE_TO_CHANGE stops unless ``allow_config_change``."""
        cfg, solver = self.cfg, self.cfg.solver
        self._allow_config_change, self._config_changes = allow_config_change, []
        rng_states = self._start(resume)
        if is_main_process():
            logger.info(f"schedule: {self._schedule}")
            for line in schedule_warnings(solver):
                logger.warning(line)
            if not self._has_validation:
                logger.info("no validation data (data.val is empty): training without evaluation; "
                            "no results.json, no model_best.pth (evaluate model_final.pth with --eval-only "
                            "and data.val)")
            self._save_run_config()
            chosen = self.hardware.as_dict()
            if self.grad_reduce:
                chosen["gradient_averaging"] = self.grad_reduce
            write_json(os.path.join(cfg.output_dir, "hardware.json"), chosen)

        dataset = self.task.train_dataset()
        sampler = TrainBatchSampler(len(dataset), solver.ims_per_batch, seed=cfg.seed,
                                    group_ids=self.task.group_ids(), start_batch=self.iteration,
                                    accumulate=solver.accumulate)
        name_decoder_messages(True)  # libjpeg's "Corrupt JPEG data" names its file, in log.txt (engine.image_io)
        interrupt = self._interrupt = GracefulInterrupt().__enter__()  # before the loader forks workers
        loader = build_train_loader(dataset, sampler, self.task.collate, self.hardware.num_workers, seed=cfg.seed)
        metrics = MetricsLogger(cfg.output_dir, self.max_iter, self.iteration, cfg.logging.log_period,
                               cfg.logging.tensorboard, cfg.logging.progress_bar, enabled=is_main_process())
        batches = iter(loader)
        # RNGs last, after everything that might draw from them: training randomness (dropout, ...)
        # then continues exactly where the checkpoint left it.
        if rng_states is not None and len(rng_states) == get_world_size():
            set_rng_state(rng_states[get_rank()])
        else:
            if rng_states is not None:
                warnings.warn(f"the checkpoint holds RNG states of {len(rng_states)} ranks, this run has "
                              f"{get_world_size()}: reseeding (the run stays valid but not bitwise "
                              "reproducible)")
            seed_everything(derive_seed(cfg.seed, get_rank(), self.iteration))
        self.train_model.train()
        final = os.path.join(cfg.output_dir, "model_final.pth")
        try:
            while self.iteration < self.max_iter:
                if interrupt.requested():
                    self._stop_on_interrupt()
                self._step(batches, sampler, metrics)
                if self._has_validation and cfg.test.eval_period > 0 \
                        and self.iteration % cfg.test.eval_period == 0 and self.iteration < self.max_iter:
                    self._evaluate_and_track(metrics)
                if self.iteration % solver.checkpoint_period == 0 or self.iteration == self.max_iter:
                    self.save_checkpoint()
            del batches, loader  # stops the (persistent) loader workers before the final evaluation
            # Training has finished: its result is written before the final evaluation, which a
            # Ctrl-C then stops at once (nothing is left half done), saying what is saved.
            if is_main_process():
                save_checkpoint(final, self._weights_state())
            interrupt.stop_at_once(f"interrupted during the final evaluation: training had finished and "
                                   f"{final} is saved; results.json was not written; evaluate with: "
                                   f"{eval_only_command()}")
            if interrupt.requested():  # Ctrl-C during the last step: training is done, no evaluation
                raise TrainingInterrupted(interrupt._at_once)
            results = self._evaluate_and_track(metrics) if self._has_validation else {}
        except KeyboardInterrupt:  # Ctrl-C twice: stopped inside a step
            saved = self.checkpointer.latest() if is_main_process() else None
            raise TrainingInterrupted(
                f"interrupted at once at iteration {self.iteration} (Ctrl-C twice; the step in progress is lost): "
                + (f"newest checkpoint {saved}; continue with: {resume_command()}" if saved else
                   "no checkpoint saved yet")) from None
        finally:
            interrupt.__exit__(None, None, None)
            name_decoder_messages(False)
            metrics.close()
        if is_main_process() and self._has_validation:
            write_json(os.path.join(cfg.output_dir, "results.json"), results)
            self.write_report(results)
        return results

    def _step(self, batches, sampler: TrainBatchSampler, metrics: MetricsLogger) -> None:
        solver = self.cfg.solver
        start = time.perf_counter()
        data_time, skipped = 0.0, 0
        sums: Dict[str, torch.Tensor] = {}
        for micro in range(solver.accumulate):
            t = time.perf_counter()
            try:
                batch, n_skipped = next(batches)
            except DataError as e:  # drop the loader worker's traceback: the message says it all
                raise DataError(user_message(e)) from None
            data_time += time.perf_counter() - t
            skipped += n_skipped
            batch = move_to_device(batch, self.device, self.channels_last)
            last = micro == solver.accumulate - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.train_model, "no_sync") \
                else self.train_model.no_sync()
            with sync:
                with autocast(self.device, self.precision):
                    losses = self.task.training_step(self.train_model, batch)
                if not losses:
                    raise ValueError("training_step returned no loss terms")
                total = sum(losses.values())
                if solver.accumulate > 1:
                    total = total / solver.accumulate
                self.scaler.scale(total).backward()
            for k, v in losses.items():
                v = v.detach().float()
                v = v / solver.accumulate if solver.accumulate > 1 else v
                sums[k] = sums[k] + v if k in sums else v

        # One small all-reduce: the logged losses are averaged over ranks and a NaN on any rank stops all.
        names = list(sums)
        packed = torch.stack([sums[k] for k in names] + [torch.tensor(float(skipped), device=self.device)])
        packed = reduce_sum_tensor(packed).tolist()
        losses_mean = {k: v / get_world_size() for k, v in zip(names, packed)}
        if not all(math.isfinite(v) for v in losses_mean.values()):
            self._non_finite(losses_mean)

        extra = {}
        if solver.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            extra["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, solver.clip_grad))
        lr = solver.base_lr * self.scheduler.factor(self.iteration)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.iteration)
        self.skipped_total += int(packed[-1])
        if self.skipped_total:
            extra["skipped"] = self.skipped_total
        metrics.update(self.iteration, sampler.epoch_of(self.iteration), lr, losses_mean,
                      time.perf_counter() - start, data_time, extra)

    def _stop_on_interrupt(self) -> None:
        if getattr(self, "saved_iteration", None) != self.iteration:
            self.save_checkpoint()
        raise TrainingInterrupted(f"interrupted at iteration {self.iteration}: saved "
                                  f"{self.checkpointer.path_for(self.iteration)}; "
                                  f"continue with: {resume_command()}")

    def _non_finite(self, losses: Dict[str, float]) -> None:
        terms = ", ".join(f"{k}={v:.6g}" for k, v in losses.items())
        kept = self._newest_finite_checkpoint() if is_main_process() else "see rank 0's message"
        raise FloatingPointError(
            f"non-finite loss at iteration {self.iteration + 1}: {terms} (total "
            f"{sum(losses.values()):.6g}); stopped before the optimizer step, {kept}. Lower "
            "solver.base_lr, lengthen solver.warmup_iters, set solver.clip_grad, or check the data")
