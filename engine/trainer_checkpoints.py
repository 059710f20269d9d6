"""What a training run saves and how it resumes: the checkpoint's contents (weights, optimizer,
schedule, sampler position, every rank's RNG), starting from the newest loadable checkpoint (``--resume``,
a torchrun restart), the run's ``config.yaml`` and what a resume changed, and the newest checkpoint with
finite weights when a loss turns non-finite. A part of :class:`engine.trainer.Trainer`, which inherits it.
"""
from __future__ import annotations

import logging
import os
import warnings

import torch
from torch import nn

from .checkpoint import get_rng_state, load_checkpoint
from .config import ConfigError, save_config, to_dict
from .data import DataError
from .dist import all_gather_object, broadcast_object, is_main_process, restart_count
from .resume import check_resume_config, resume_config_path, resuming_from

logger = logging.getLogger(__name__)


class TrainerCheckpoints:
    """Checkpoints for :class:`engine.trainer.Trainer`: it uses the trainer's ``cfg``, ``task``,
    ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``checkpointer``, ``iteration``,
    ``best_metric`` and ``last_checkpoint``."""

    def _start(self, resume: bool):
        """Restore the newest checkpoint (resume) or check the output_dir is free; returns the saved
        per-rank RNG states, or None on a fresh start.

        Under torchrun, a restarted worker group (TORCHELASTIC_RESTART_COUNT > 0: a worker died and
        ``--max-restarts`` allowed another attempt) resumes without ``--resume`` (docs/distributed.md)."""
        found, state = None, None
        if not resume and restart_count() > 0:
            resume = True
            if is_main_process():
                logger.info(f"torchrun restart {restart_count()}: resuming from the newest complete checkpoint")
        if is_main_process():
            self.checkpointer.remove_stale_temporaries()
            if resume:
                latest = self.checkpointer.load_latest()  # rank 0 picks; every rank loads that file
                if latest is not None:
                    found, state = latest
            elif self.checkpointer.all():
                found = "exists"
        found = broadcast_object(found)
        if found == "exists":
            raise ConfigError(f"{self.cfg.output_dir} already holds checkpoints of a run: pass --resume to "
                              "continue it, or choose another output_dir (or delete its checkpoints/)")
        if found is None and resuming_from():
            # the model was built without its starting weights because a checkpoint was there: training
            # on from random weights would be a silent failure
            raise DataError(f"--resume: no checkpoint in {self.checkpointer.directory} could be loaded (see the "
                            "warnings above), and the starting weights were not read because one was there; "
                            "remove the unreadable checkpoints, or choose another output_dir to start afresh")
        if found is None:
            if resume and is_main_process():
                logger.info(f"no checkpoint in {self.checkpointer.directory}: starting from scratch")
            return None
        if state is None and os.path.isfile(found):
            state = load_checkpoint(found)
        # Several nodes without a shared output_dir: a rank that cannot see the file gets rank 0's copy.
        blind = [r for r, missing in enumerate(all_gather_object(state is None)) if missing]
        if blind:
            if is_main_process():
                logger.warning(f"ranks {blind} cannot read {found}: sending them rank 0's copy (put "
                               "output_dir on a filesystem every node shares to avoid this)")
            state = broadcast_object(state if is_main_process() else None)
        self._check_resume_config(state, found)  # before loading: a changed model must not half-load
        self.load_state(state)
        self.last_checkpoint = found
        if is_main_process():
            logger.info(f"resuming from {found} (iteration {self.iteration})")
        return state.get("rng")

    def _check_resume_config(self, state: dict, checkpoint: str) -> None:
        """A resume continues one experiment: the config may differ from the checkpoint's only in run
        length, logging, periods and workers, unless --allow-config-change (engine.resume)."""
        self._config_changes = check_resume_config(self.cfg, state, checkpoint,
                                                    getattr(self, "_allow_config_change", False))
        if self._config_changes and is_main_process():
            logger.info(f"resuming with a changed config: {', '.join(self._config_changes)}")

    def _save_run_config(self) -> None:
        # A resume never overwrites the run's config.yaml; what it changed goes beside it.
        if self.last_checkpoint is None:
            path = os.path.join(self.cfg.output_dir, "config.yaml")
        else:
            path = resume_config_path(self.cfg.output_dir, self.iteration, self._config_changes)
        if path is not None:
            save_config(self.cfg, path)

    def _newest_finite_checkpoint(self) -> str:
        # Weights can blow up several steps before the loss turns non-finite, so the newest file is
        # not necessarily a good one: name the newest whose weights are all finite, with their scale.
        for _, path in reversed(self.checkpointer.all()):
            try:
                state = load_checkpoint(path)["model"]
            except Exception:  # noqa: BLE001 - an unreadable file is simply not a candidate
                continue
            tensors = [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
            if all(bool(torch.isfinite(v).all()) for v in tensors):
                largest = max((float(v.abs().max()) for v in tensors), default=0.0)
                return (f"the newest checkpoint whose weights are all finite is {path} "
                        f"(largest |weight| {largest:.3g})")
        return "no checkpoint with finite weights was written"

    def _weights_state(self) -> dict:
        state = {"model": self.model.state_dict(), "config": to_dict(self.cfg),
                 "meta": self.task.checkpoint_meta(), "iteration": self.iteration}
        if self.ema is not None:
            state["model_ema"] = self.ema.state_dict()
        return state

    def state_dict(self) -> dict:
        """Everything a resume needs (rank 0's view; RNG states are added per rank when saving)."""
        state = self._weights_state()
        state.update({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "sampler": {"start_batch": self.iteration},  # one global batch per optimizer step
            "best_metric": self.best_metric,
        })
        return state

    def save_checkpoint(self) -> None:
        """``checkpoints/model_{iteration:07d}.pth``; a collective call (every rank's RNG is saved)."""
        rng = all_gather_object(get_rng_state())
        self.saved_iteration = self.iteration  # on every rank (last_checkpoint is rank 0's path)
        if is_main_process():
            state = self.state_dict()
            state["rng"] = rng
            self.last_checkpoint = self.checkpointer.save(self.iteration, state)

    def load_state(self, state: dict) -> None:
        load_model_weights(self.model, state["model"], "checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None:
            if "model_ema" in state:
                self.ema.load_state_dict(state["model_ema"])
            else:
                warnings.warn("the checkpoint has no EMA weights (solver.ema was off): starting the EMA "
                              "from the current weights")
                self.ema.load_state_dict(self.model.state_dict())
        self.iteration = int(state["iteration"])
        self.best_metric = state.get("best_metric")


def load_model_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """Strict load with a one-line error that names what does not match."""
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as e:  # shape mismatches
        raise DataError(f"{source}: weights do not fit the model: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise DataError(f"{source}: weights do not fit the model: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); "
                         "is it a checkpoint of this model and config?")
