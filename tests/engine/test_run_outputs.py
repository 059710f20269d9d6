"""What a run leaves in output_dir, and the features a task turns on through the config."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import load_config_for, write_config
from engine.checkpoint import Checkpointer, load_checkpoint
from engine.config import load_config
from engine.trainer import Trainer
from tiny_task import TinyConfig, TinyTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_run_writes_config_metrics_events_checkpoints_results(tmp_path, restore_torch_state):
    config = write_config(tmp_path, "run", solver={"max_iter": 10, "checkpoint_period": 2, "keep_checkpoints": 3,
                                                   "ema": True, "ema_decay": 0.5},
                          test={"eval_period": 5, "ims_per_batch": 16},
                          logging={"log_period": 2, "tensorboard": True, "progress_bar": True})
    cfg = load_config_for(config)
    task = TinyTask(cfg)
    results = Trainer(cfg, task).train()
    run = os.path.join(tmp_path, "run")

    assert load_config(TinyConfig, os.path.join(run, "config.yaml")) == cfg  # the resolved config
    with open(os.path.join(run, "results.json")) as f:
        assert json.load(f) == results and results["num_images"] == 40

    with open(os.path.join(run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if "loss" in r]
    assert [r["iter"] for r in train] == [2, 4, 6, 8, 10]
    assert {"iter", "epoch", "lr", "loss", "loss_cls", "loss_logit_l2", "time", "data_time"} <= set(train[0])
    assert train[-1]["loss"] == pytest.approx(train[-1]["loss_cls"] + train[-1]["loss_logit_l2"])
    assert [(r["iter"], r["eval"]) for r in records if "eval" in r][-1] == (10, results)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(run)
    events.Reload()
    assert [s.step for s in events.Scalars("train/loss")] == [2, 4, 6, 8, 10]
    assert [s.step for s in events.Scalars("eval/top1")] == [5, 10]

    assert [i for i, _ in Checkpointer(run).all()] == [6, 8, 10]  # the last three
    ckpt = load_checkpoint(os.path.join(run, "checkpoints", "model_0000010.pth"))
    assert set(ckpt) == {"model", "model_ema", "optimizer", "scheduler", "grad_scaler", "iteration", "sampler",
                         "rng", "config", "meta", "best_metric"}
    assert ckpt["sampler"] == {"start_batch": 10} and ckpt["meta"] == task.checkpoint_meta()
    final = load_checkpoint(os.path.join(run, "model_final.pth"))
    assert set(final) == {"model", "model_ema", "config", "meta", "iteration"} and final["iteration"] == 10
    best = load_checkpoint(os.path.join(run, "model_best.pth"))
    assert set(best["metric"]) == {"top1"}

    # the INFO log: the console's lines, in log.txt; the loss line's terms add up to its loss
    with open(os.path.join(run, "log.txt")) as f:
        log = f.read()
    iter_lines = [line for line in log.splitlines() if "] iter " in line]
    assert [line.split("] iter ")[1].split("/")[0] for line in iter_lines] == ["2", "4", "6", "8", "10"]
    last = iter_lines[-1].split("  ")
    loss = float(next(part for part in last if part.startswith("loss ")).split()[1])
    terms = iter_lines[-1].split("(")[1].split(")")[0].split("  ")
    assert loss == pytest.approx(sum(float(t.split()[1]) for t in terms), rel=1e-3)
    assert "evaluation at iter 10: top1" in log

    # --eval-only on the final weights evaluates the EMA weights, as the run's final evaluation did
    again = Trainer(cfg, TinyTask(cfg)).evaluate_only()
    assert again == results
    assert os.path.isfile(os.path.join(run, "results_eval.json"))

    png = os.path.join(tmp_path, "curves.png")
    tool = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_metrics.py"), run, "--out", png],
                          capture_output=True, text=True, timeout=60)
    assert tool.returncode == 0, tool.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bf16_channels_last_adamw_clipping_accumulation_cosine(tmp_path, restore_torch_state):
    cfg = load_config_for(write_config(
        tmp_path, "run", solver={"max_iter": 6, "amp": "bf16", "channels_last": True, "optimizer": "AdamW",
                                 "base_lr": 0.003, "clip_grad": 0.5, "accumulate": 2, "lr_schedule": "cosine",
                                 "no_decay_norm_bias": True, "max_epochs": 0}))
    trainer = Trainer(cfg, TinyTask(cfg))
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    before = trainer.model.conv1.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.conv1.weight)
    with open(os.path.join(tmp_path, "run", "metrics.jsonl")) as f:
        train = [json.loads(line) for line in f if '"loss"' in line]
    assert all(r["grad_norm"] > 0 for r in train) and len(train) == 6


def test_max_epochs_and_batch_scaling_set_the_iterations(tmp_path, restore_torch_state):
    cfg = load_config_for(write_config(
        tmp_path, "run", solver={"max_epochs": 2, "ims_per_batch": 16, "reference_batch": 8, "base_lr": 0.05,
                                 "max_iter": 100, "steps": [60], "checkpoint_period": 10},
        test={"eval_period": 20, "ims_per_batch": 16}))
    trainer = Trainer(cfg, TinyTask(cfg))
    s = trainer.cfg.solver
    assert trainer.max_iter == s.max_iter == 12  # 2 epochs x 96 samples / 16
    assert s.base_lr == pytest.approx(0.1) and s.steps == [30] and s.checkpoint_period == 5
    assert trainer.cfg.test.eval_period == 10
    # the run says where its length came from, and that the config's max_iter was not used
    trainer.train()
    with open(os.path.join(tmp_path, "run", "log.txt")) as f:
        line = next(l for l in f if "schedule:" in l)
    assert "12 iterations of 16 images, base_lr 0.1" in line
    assert "solver.max_epochs 2 over 96 training samples" in line and "solver.max_iter, 100 here" in line
    assert "written for batches of 8 (solver.reference_batch): LR x2, steps, warm-up and periods x0.5" in line


def test_evaluation_alone_does_not_read_the_training_set(tmp_path, restore_torch_state):
    """solver.max_epochs (the segmentation configs set it) needs the training set's size; a task built
    to evaluate only (training=False: --eval-only, eval_coco.py) must not be asked for it."""
    class EvalOnlyTask(TinyTask):
        training = False

        @property
        def num_train_samples(self):
            raise AssertionError("evaluation read the training set")

        @num_train_samples.setter
        def num_train_samples(self, value):  # TinyTask sets it; this one never tells it
            pass

    cfg = load_config_for(write_config(tmp_path, "run", solver={"max_epochs": 30, "max_iter": 7}))
    trainer = Trainer(cfg, EvalOnlyTask(cfg))
    assert trainer.max_iter == 7
    assert trainer.evaluate()["num_images"] == 40
