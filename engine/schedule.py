"""Learning-rate schedules as a function of the iteration, and the batch-size scaling rule.

The learning rate of optimizer step ``i`` (0-based) is ``base_lr * lr_mult * factor(i)`` where

    factor(i) = warmup(i) * main(i)
    warmup(i) = warmup_factor * (1 - i / warmup_iters) + i / warmup_iters   for i < warmup_iters, else 1
    main(i)   = step:      gamma ** (i // steps[0])
                multistep: gamma ** (number of milestones in steps that are <= i)
                cosine:    min_lr_factor + (1 - min_lr_factor) * (1 + cos(pi * i / max_iter)) / 2
                poly:      (1 - i / max_iter) ** poly_power
                constant:  1
                plateau:   gamma ** (number of plateaus so far)

"plateau" is the paper's "divide by 10 when the error plateaus": after each evaluation the trainer
reports the primary metric (higher is better); an evaluation improves when it beats the best so far by
more than ``plateau_threshold`` relative (``metric > best + |best| * threshold``, torch's
ReduceLROnPlateau "rel" mode), and after ``plateau_patience`` consecutive evaluations without an
improvement the factor is multiplied by ``gamma`` and the count starts again.

The LR is thus a pure function of the iteration and the plateau count, both saved in checkpoints,
which makes a resumed run follow the same LRs as an uninterrupted one.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from typing import List, Optional, Tuple

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class LRFactor:
    """``factor(i)`` above; holds the plateau state."""

    def __init__(self, solver, max_iter: int):
        self.kind = solver.lr_schedule
        self.max_iter = max(1, int(max_iter))
        self.warmup_iters = int(solver.warmup_iters)
        self.warmup_factor = float(solver.warmup_factor)
        self.steps = [int(s) for s in solver.steps]
        self.gamma = float(solver.gamma)
        self.poly_power = float(solver.poly_power)
        self.min_lr_factor = float(solver.min_lr_factor)
        self.patience = int(solver.plateau_patience)
        self.threshold = float(solver.plateau_threshold)
        # plateau state
        self.best: Optional[float] = None
        self.bad_evals = 0
        self.drops = 0

    def main(self, i: int) -> float:
        if self.kind == "step":
            return self.gamma ** (i // self.steps[0])
        if self.kind == "multistep":
            return self.gamma ** bisect.bisect_right(self.steps, i)
        if self.kind == "cosine":
            t = min(i, self.max_iter) / self.max_iter
            return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "poly":
            return max(0.0, 1.0 - i / self.max_iter) ** self.poly_power
        if self.kind == "plateau":
            return self.gamma ** self.drops
        if self.kind == "constant":
            return 1.0
        raise ValueError(f"solver.lr_schedule: unknown schedule '{self.kind}'")

    def warmup(self, i: int) -> float:
        if i >= self.warmup_iters:
            return 1.0
        alpha = i / self.warmup_iters
        return self.warmup_factor * (1.0 - alpha) + alpha

    def __call__(self, i: int) -> float:
        return self.warmup(i) * self.main(i)

    def report(self, metric: float) -> bool:
        """Record an evaluation; True when it divided the LR."""
        if self.best is None or metric > self.best + abs(self.best) * self.threshold:
            self.best, self.bad_evals = float(metric), 0
            return False
        self.bad_evals += 1
        if self.kind == "plateau" and self.bad_evals >= self.patience:
            self.drops += 1
            self.bad_evals = 0
            return True
        return False

    def plateau_state(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals, "drops": self.drops}

    def load_plateau_state(self, state: dict) -> None:
        self.best, self.bad_evals, self.drops = state["best"], int(state["bad_evals"]), int(state["drops"])


class IterationLR(LambdaLR):
    """LambdaLR over :class:`LRFactor`, stepped once per optimizer step.

    Its state is the iteration and the plateau state only (the schedule's shape comes from the config),
    so checkpoints hold plain numbers and a changed config takes effect on resume.
    """

    def __init__(self, optimizer: Optimizer, factor: LRFactor):
        self.factor = factor
        super().__init__(optimizer, lr_lambda=factor)

    def report(self, metric: float) -> bool:
        """Feed an evaluation to the plateau rule; a drop applies from the next step on."""
        dropped = self.factor.report(metric)
        if dropped:
            self._apply()
        return dropped

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(self.last_epoch)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "plateau": self.factor.plateau_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = self.last_epoch + 1
        self.factor.load_plateau_state(state_dict["plateau"])
        self._apply()


def schedule_warnings(solver) -> List[str]:
    """What in ``solver`` (as it runs: after the batch rescaling and ``max_epochs``) can never take
    effect, one line each: milestones at or past ``max_iter`` (the LR would never decay there) and a
    warm-up that lasts the whole run. The trainer logs them when training starts."""
    lines, n = [], solver.max_iter
    if solver.lr_schedule in ("multistep", "step") and solver.steps:
        late = [s for s in solver.steps if s >= n]
        if solver.lr_schedule == "step":
            late = late[:1]
        if late:
            never = "never decays" if len(late) == len(solver.steps) else f"does not decay at {late}"
            lines.append(f"solver.steps {list(solver.steps)} reach solver.max_iter {n} or beyond: the learning "
                         f"rate {never} (iterations run 0 to {n - 1}); set steps below max_iter")
    if solver.warmup_iters > 0 and solver.warmup_iters >= n:
        lines.append(f"solver.warmup_iters {solver.warmup_iters} >= solver.max_iter {n}: the whole run is "
                     f"warm-up, the learning rate never reaches base_lr; set warmup_iters below max_iter")
    return lines


def build_lr_scheduler(optimizer: Optimizer, solver, max_iter: int) -> IterationLR:
    return IterationLR(optimizer, LRFactor(solver, max_iter))


# What scale_for_batch rescales, as config keys.
SCALED_KEYS = ("solver.base_lr", "solver.max_iter", "solver.steps", "solver.warmup_iters",
               "solver.checkpoint_period", "test.eval_period")


def scale_for_batch(solver, test=None, typed=frozenset()) -> Tuple[object, Optional[object]]:
    """Adapt a schedule written for ``solver.reference_batch`` images per step to ``ims_per_batch``.

    The linear scaling rule (Goyal et al. 2017), as detectron2's ``auto_scale_workers`` applies it:
    with ``k = ims_per_batch / reference_batch``,

        base_lr           * k
        max_iter          / k     (rounded; the number of epochs stays the same)
        steps             / k
        warmup_iters      / k
        checkpoint_period / k
        test.eval_period  / k

    and ``reference_batch`` becomes ``ims_per_batch``, so scaling twice changes nothing. With
    ``reference_batch: 0`` (the default) or equal to ``ims_per_batch`` the configs are returned as
    they are. Returns new ``(solver, test)`` dataclasses; the inputs are not modified.

    Keys in ``typed`` (``solver.max_iter``, ... given on the command line) are taken as typed, for
    the batch that runs: only the config files' own values are written for ``reference_batch``.
    """
    ref, batch = solver.reference_batch, solver.ims_per_batch
    if ref <= 0 or ref == batch:
        return solver, test
    k = batch / ref

    def iters(n: int) -> int:
        return max(1, int(round(n / k))) if n > 0 else n

    scaled = dict(base_lr=solver.base_lr * k, max_iter=iters(solver.max_iter),
                  steps=[iters(s) for s in solver.steps], warmup_iters=int(round(solver.warmup_iters / k)),
                  checkpoint_period=iters(solver.checkpoint_period))
    scaled = {key: value for key, value in scaled.items() if f"solver.{key}" not in typed}
    solver = dataclasses.replace(solver, reference_batch=batch, **scaled)
    if test is not None and "test.eval_period" not in typed:
        test = dataclasses.replace(test, eval_period=iters(test.eval_period))
    return solver, test
