"""Failures a user meets: a non-finite loss, a bad sample in a loader worker, skipped samples, a config
that cannot run. Each ends with one clear line, and nothing already saved is damaged."""
import json
import os

import pytest
import torch
import yaml
from torch.utils.data._utils import ExceptionWrapper

from conftest import load_config_for, run_tiny, write_config
from engine.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from engine.config import ConfigError
from engine.data import DataError, user_message
from engine.sampler import TrainBatchSampler
from engine.trainer import Trainer
from tiny_task import TinyTask

BAD_FILE_MESSAGE = ("images/00005.png: cannot decode the image (truncated file?); "
                    "re-download it or remove it from the list")


def trainer_for(tmp_path, **sections):
    cfg = load_config_for(write_config(tmp_path, "run", **sections))
    return Trainer(cfg, TinyTask(cfg))


def test_non_finite_loss_names_iteration_and_terms_and_keeps_last_checkpoint(tmp_path, restore_torch_state):
    # the sample that holds a NaN first comes in global batch 7, i.e. optimizer step (iteration) 8
    nan_index = TrainBatchSampler(96, 8, 0, 1, seed=0).permutation(0)[7 * 8 + 3]
    trainer = trainer_for(tmp_path, data={"nan_index": nan_index})
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("non-finite loss at iteration 8: loss_cls=nan, loss_logit_l2=nan")
    run_dir = os.path.join(tmp_path, "run")
    five = os.path.join(run_dir, "checkpoints", "model_0000005.pth")
    assert f"the newest checkpoint whose weights are all finite is {five} (largest |weight| " in message
    assert [i for i, _ in Checkpointer(run_dir).all()] == [5]
    assert load_checkpoint(Checkpointer(run_dir).latest())["iteration"] == 5
    assert not os.path.exists(os.path.join(run_dir, "model_final.pth"))

    # a newer checkpoint whose weights already blew up is passed over
    state = load_checkpoint(five)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("inf"))
    save_checkpoint(os.path.join(run_dir, "checkpoints", "model_0000007.pth"), state)
    assert trainer._newest_finite_checkpoint().startswith(
        f"the newest checkpoint whose weights are all finite is {five} ")


def test_data_error_in_worker_is_one_line_and_exit_code_1(tmp_path):
    result = run_tiny(write_config(tmp_path, "run", data={"num_workers": 2, "bad_index": 5}))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {BAD_FILE_MESSAGE}"
    assert "Traceback" not in result.stderr and "worker" not in result.stderr


def test_data_error_without_workers(tmp_path, restore_torch_state):
    with pytest.raises(DataError) as info:
        trainer_for(tmp_path, data={"bad_index": 5}).train()
    assert str(info.value) == BAD_FILE_MESSAGE


def test_user_message_strips_the_worker_traceback():
    try:
        raise DataError("ann.json record 17: box has negative width; fix or drop the record")
    except DataError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(DataError) as info:
        wrapper.reraise()
    assert "Original Traceback" in str(info.value)
    assert user_message(info.value) == "ann.json record 17: box has negative width; fix or drop the record"
    assert user_message(ValueError("plain")) == "plain"


def test_skipped_samples_are_counted_and_a_second_fresh_run_is_refused(tmp_path, restore_torch_state):
    results = trainer_for(tmp_path, data={"skip_index": 3}).train()
    assert set(results) == {"top1", "num_images"}
    with open(os.path.join(tmp_path, "run", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    last_train = [r for r in records if "loss" in r][-1]
    stream = TrainBatchSampler(96, 8, 0, 1, seed=0).global_batches()
    expected = sum(index == 3 for _, batch in zip(range(20), stream) for index, _ in batch)
    assert last_train["iter"] == 20 and last_train["skipped"] == expected >= 1
    with pytest.raises(ConfigError, match="pass --resume"):
        trainer_for(tmp_path).train()


def test_configs_that_cannot_run(tmp_path, restore_torch_state):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            trainer_for(tmp_path, solver={"amp": "fp16"})
    with pytest.raises(ConfigError, match="test.eval_period"):
        trainer_for(tmp_path, solver={"lr_schedule": "plateau"})
    with pytest.raises(ValueError, match="ims_per_batch=8 must be divisible"):
        trainer_for(tmp_path, solver={"accumulate": 3})


def test_evaluation_line_and_curves_show_every_tasks_primary_numbers():
    """Mask R-CNN's segm numbers came after bbox's twelve and per-category ones: the line cut them."""
    from engine.logger import primary_numbers
    from engine.plotting import eval_curves

    coco = {k: 10.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")}
    results = {"bbox": dict(coco, AP=41.25), "bbox_per_category": {"circle": 40.0},
               "segm": dict(coco, AP=37.5, APl=float("nan")), "segm_per_category": {"circle": 30.0}}
    line = primary_numbers(results)
    assert line == "bbox AP 41.25, AP50 10.00, AP75 10.00; segm AP 37.50, AP50 10.00, AP75 10.00"
    assert primary_numbers({"sem_seg": {"mIoU": 80.1, "pixel_accuracy": 95.0, "per_class_IoU": {"a": 1.0}}}) == \
        "sem_seg mIoU 80.10, pixel_accuracy 95.00"
    assert primary_numbers({"top1": 98.5, "top5": 100.0, "num_images": 100}) == "top1 98.50, top5 100.00"
    curves = eval_curves([{"iter": 5, "eval": results}, {"iter": 10, "eval": results}], max_curves=2)
    assert {"bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"} <= set(curves)
    assert curves["segm/AP"] == [(5, 37.5), (10, 37.5)] and not any("per_" in k for k in curves)


def test_ctrl_c_during_the_final_evaluation_keeps_model_final_and_says_so(tmp_path, capsys, monkeypatch):
    """The first Ctrl-C during the final evaluation stops it at once (exit 130), with one line saying
    that training had finished and model_final.pth is saved, and how to evaluate it."""
    import signal

    import sys

    import tiny_task
    from engine.launch import run_tool

    real = TinyTask.evaluate

    def evaluate_and_interrupt(self, model):
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, model)

    monkeypatch.setattr(TinyTask, "evaluate", evaluate_and_interrupt)
    cfg = {"seed": 0, "output_dir": str(tmp_path / "run"), "data": {"num_workers": 0, "num_train": 16, "num_val": 8},
           "solver": {"base_lr": 0.05, "ims_per_batch": 8, "max_iter": 2, "checkpoint_period": 1},
           "test": {"eval_period": 0, "ims_per_batch": 8},
           "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(sys, "argv", [tiny_task.__file__, "--config", str(path)])
    with pytest.raises(SystemExit) as stop:
        run_tool(tiny_task.main)
    assert stop.value.code == 130
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    final = tmp_path / "run" / "model_final.pth"
    assert lines[0].startswith(f"error: interrupted during the final evaluation: training had finished and {final} "
                               "is saved") and "--eval-only" in lines[0] and "not started" not in lines[0]
    assert final.is_file() and not (tmp_path / "run" / "results.json").exists()
