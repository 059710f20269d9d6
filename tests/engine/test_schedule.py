import dataclasses
import math

import pytest
import torch

from engine.config import SolverConfig
from engine.config import TestConfig as EvalConfig  # "Test*" would be collected by pytest
from engine.schedule import build_lr_scheduler, scale_for_batch, schedule_warnings


def lrs(solver, n, reports=None):
    """LR used by optimizer steps 0..n-1; ``reports`` maps a step to a metric reported after it."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=solver.base_lr)
    sched = build_lr_scheduler(opt, solver, solver.max_iter)
    out = []
    for i in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if reports and i in reports:
            sched.report(reports[i])
    return out, sched, opt


def test_warmup_then_multistep():
    s = SolverConfig(base_lr=0.1, warmup_iters=4, warmup_factor=0.001, lr_schedule="multistep",
                     steps=[10, 15], gamma=0.1, max_iter=20)
    got, _, _ = lrs(s, 20)
    # i < 4: 0.1 * (0.001 * (1 - i/4) + i/4)
    assert got[0] == pytest.approx(1e-4)
    assert got[1] == pytest.approx(0.1 * (0.001 * 0.75 + 0.25))
    assert got[2] == pytest.approx(0.05005)
    assert got[4] == pytest.approx(0.1) and got[9] == pytest.approx(0.1)
    assert got[10] == pytest.approx(0.01) and got[14] == pytest.approx(0.01)
    assert got[15] == pytest.approx(0.001) and got[19] == pytest.approx(0.001)


def test_step_cosine_poly_constant():
    got, _, _ = lrs(SolverConfig(base_lr=1.0, lr_schedule="step", steps=[3], gamma=0.5, max_iter=10), 10)
    assert got[2] == 1.0 and got[3] == 0.5 and got[7] == 0.25
    got, _, _ = lrs(SolverConfig(base_lr=1.0, lr_schedule="cosine", min_lr_factor=0.1, max_iter=10), 11)
    assert got[0] == 1.0
    assert got[5] == pytest.approx(0.55)  # 0.1 + 0.9 * (1 + cos(pi/2)) / 2
    assert got[10] == pytest.approx(0.1)
    got, _, _ = lrs(SolverConfig(base_lr=2.0, lr_schedule="poly", poly_power=0.9, max_iter=10), 10)
    assert got[5] == pytest.approx(2.0 * 0.5 ** 0.9)
    assert got[9] == pytest.approx(2.0 * 0.1 ** 0.9)
    got, _, _ = lrs(SolverConfig(base_lr=0.3, lr_schedule="constant", warmup_iters=2, warmup_factor=0.5,
                                 max_iter=10), 10)
    assert got[:4] == pytest.approx([0.15, 0.225, 0.3, 0.3])


def test_plateau_divides_after_patience_and_resumes():
    s = SolverConfig(base_lr=1.0, lr_schedule="plateau", gamma=0.1, plateau_patience=2,
                     plateau_threshold=0.01, max_iter=100)
    # after step 0: 50 (best); 1: 60 (best); 2: 60.5 (< 60 * 1.01: bad 1); 3: 60.55 (bad 2 -> /10);
    # 4: 70 (best); 5: 69 (bad 1); 6: 69.9 (bad 2 -> /10)
    reports = {0: 50, 1: 60, 2: 60.5, 3: 60.55, 4: 70, 5: 69, 6: 69.9}
    got, sched, opt = lrs(s, 9, reports)
    assert got == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    state = sched.state_dict()
    assert state == {"last_epoch": 9, "plateau": {"best": 70.0, "bad_evals": 0, "drops": 2}}
    # a fresh scheduler restored from the state continues with the same LR
    p = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p], lr=1.0)
    sched2 = build_lr_scheduler(opt2, s, s.max_iter)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_scheduler_state_restores_mid_schedule():
    s = SolverConfig(base_lr=0.1, warmup_iters=5, lr_schedule="cosine", max_iter=30)
    full, _, _ = lrs(s, 30)
    _, sched, _ = lrs(s, 12)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched2 = build_lr_scheduler(opt, s, s.max_iter)
    sched2.load_state_dict(sched.state_dict())
    tail = []
    for _ in range(12, 30):
        tail.append(opt.param_groups[0]["lr"])
        opt.step()
        sched2.step()
    assert tail == full[12:]  # bitwise: the LR is a pure function of the iteration


def test_scale_for_batch_linear_rule():
    s = SolverConfig(base_lr=0.1, ims_per_batch=512, reference_batch=256, max_iter=1000, steps=[600, 800],
                     warmup_iters=100, checkpoint_period=1000)
    t = EvalConfig(eval_period=200)
    s2, t2 = scale_for_batch(s, t)
    assert s2.base_lr == pytest.approx(0.2)
    assert (s2.max_iter, s2.steps, s2.warmup_iters, s2.checkpoint_period) == (500, [300, 400], 50, 500)
    assert t2.eval_period == 100 and s2.reference_batch == 512
    assert scale_for_batch(s2, t2) == (s2, t2)  # idempotent
    assert s.base_lr == 0.1 and t.eval_period == 200  # inputs untouched
    half, _ = scale_for_batch(dataclasses.replace(s, ims_per_batch=128))
    assert half.base_lr == pytest.approx(0.05) and half.max_iter == 2000 and half.steps == [1200, 1600]
    same, _ = scale_for_batch(dataclasses.replace(s, reference_batch=0))
    assert same.base_lr == 0.1 and same.max_iter == 1000


def test_schedule_warnings_name_what_never_takes_effect():
    """A milestone at or past max_iter never applies (the LR of the last step, max_iter - 1, is checked
    against the schedule itself); a warm-up as long as the run never reaches base_lr."""
    s = SolverConfig(base_lr=0.1, lr_schedule="multistep", steps=[2, 3], max_iter=3, warmup_iters=0)
    got, _, _ = lrs(s, 3)
    assert got == pytest.approx([0.1, 0.1, 0.01])  # 2 applies, 3 does not
    (line,) = schedule_warnings(s)
    assert line.startswith("solver.steps [2, 3] reach solver.max_iter 3 or beyond: the learning rate does not "
                           "decay at [3]")
    assert "never decays" in schedule_warnings(dataclasses.replace(s, steps=[100]))[0]
    assert "never decays" in schedule_warnings(dataclasses.replace(s, lr_schedule="step", steps=[3]))[0]
    assert schedule_warnings(dataclasses.replace(s, lr_schedule="step", steps=[2])) == []
    assert schedule_warnings(dataclasses.replace(s, steps=[1, 2])) == []
    assert schedule_warnings(dataclasses.replace(s, lr_schedule="cosine", steps=[100])) == []  # steps unused
    warm = schedule_warnings(dataclasses.replace(s, steps=[], warmup_iters=3))
    assert warm == ["solver.warmup_iters 3 >= solver.max_iter 3: the whole run is warm-up, the learning rate "
                    "never reaches base_lr; set warmup_iters below max_iter"]
    assert schedule_warnings(dataclasses.replace(s, steps=[], warmup_iters=2)) == []


def test_command_line_schedule_values_are_taken_as_typed(tmp_path):
    """solver.max_iter=150 on the command line runs 150 iterations whatever reference_batch says; the
    config file's own values still rescale (docs/configs.md), and the schedule line says which kept."""
    from engine.config import RunConfig, load_config, overridden_keys
    from engine.trainer import describe_schedule

    path = tmp_path / "c.yaml"
    path.write_text("solver: {base_lr: 0.02, ims_per_batch: 4, reference_batch: 16, max_iter: 1000, "
                    "steps: [800], warmup_iters: 100}\n")
    cfg = load_config(RunConfig, str(path), ["solver.max_iter=150"])
    assert overridden_keys(cfg) == {"solver.max_iter"}
    solver, _ = scale_for_batch(cfg.solver, cfg.test, overridden_keys(cfg))
    assert solver.max_iter == 150  # as typed, not 600
    assert solver.steps == [3200] and solver.warmup_iters == 400 and solver.base_lr == pytest.approx(0.005)
    line = describe_schedule(cfg.solver, solver, 0, overridden_keys(cfg))
    assert line.startswith("150 iterations of 4 images") and "except solver.max_iter given on the command line" in line
    from_file = load_config(RunConfig, str(path))
    assert scale_for_batch(from_file.solver, from_file.test, overridden_keys(from_file))[0].max_iter == 4000
