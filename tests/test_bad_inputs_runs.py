"""Bad-input corpus, part 1: configs, resuming, interruption and the disk, on the engine's tiny task
(tests/engine/tiny_task.py, run in-process). Each case: the exit code and one line naming the key,
file or checkpoint, no traceback (tests/bad_inputs_support.py)."""
import errno
import os
import signal

import pytest
import torch
import yaml

from bad_inputs_support import DET_CONFIG, ROOT, SEG_CONFIG, det_overrides, expect_error, run, tool

TINY = os.path.join(ROOT, "tests", "engine", "tiny_task.py")
BASE = {
    "seed": 0, "deterministic": True,
    "data": {"num_workers": 0, "num_train": 48, "num_val": 16},
    "model": {"dropout": 0.2, "width": 8},
    "solver": {"base_lr": 0.05, "ims_per_batch": 8, "max_iter": 6, "steps": [4], "warmup_iters": 1,
               "checkpoint_period": 2, "momentum": 0.9, "weight_decay": 1e-4},
    "test": {"eval_period": 0, "ims_per_batch": 16},
    "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False},
}


def config(tmp_path, name="run", **sections) -> str:
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    cfg.setdefault("output_dir", str(tmp_path / name))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def tiny(capsys, *argv):
    return run(capsys, TINY, *argv)


@pytest.fixture(scope="module")
def _one_run(tmp_path_factory):
    """A tiny run of 6 iterations (checkpoints at 2, 4, 6), trained once for the module."""
    class Quiet:  # no capsys in a module fixture: pytest's own capture takes the output
        def readouterr(self):
            return "", ""

    tmp = tmp_path_factory.mktemp("finished")
    done = tiny(Quiet(), "--config", config(tmp))
    assert done.code == 0
    return tmp


@pytest.fixture
def finished_run(_one_run, tmp_path):
    """A copy of the finished run (its config file and output_dir) for one test to change."""
    import shutil

    shutil.copytree(_one_run / "run", tmp_path / "run")
    return config(tmp_path), tmp_path / "run"


# ---------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("override, names", [
    ("solver.base_lrr=0.1", ["solver.base_lrr", "base_lr"]),       # unknown key, closest named
    ("solver.max_iter=many", ["solver.max_iter"]),                  # wrong type
    ("solver.lr_schedule=cosinus", ["solver.lr_schedule", "cosine"]),  # not a choice
])
def test_config_key_errors_exit_2(tmp_path, capsys, override, names):
    expect_error(tiny(capsys, "--config", config(tmp_path), override), 2, *names,
                 case=f"config override {override}")


@pytest.mark.parametrize("override, names", [
    ("solver.base_lr=-1", ["solver.base_lr", "positive", "-1"]),  # torch.optim's traceback named no key
    ("solver.base_lr=0", ["solver.base_lr", "positive"]),
    ("solver.momentum=1.5", ["solver.momentum", "[0, 1)"]),
    ("solver.weight_decay=-1e-4", ["solver.weight_decay", "at least 0"]),
    ("solver.gamma=0", ["solver.gamma", "(0, 1]"]),
    ("solver.warmup_factor=2", ["solver.warmup_factor", "(0, 1]"]),
    ("solver.warmup_iters=-1", ["solver.warmup_iters", "at least 0"]),
    ("solver.betas=[0.9]", ["solver.betas", "two values"]),
    ("solver.ema_decay=1", ["solver.ema_decay", "(0, 1)"]),
    ("solver.clip_grad=-1", ["solver.clip_grad", "at least 0"]),
    ("solver.steps=[0,4]", ["solver.steps", "at least 1"]),
    ("solver.base_lr=.nan", ["solver.base_lr", "nan"]),
])
def test_solver_values_out_of_range_exit_2(tmp_path, capsys, override, names):
    expect_error(tiny(capsys, "--config", config(tmp_path), override), 2, *names, case=f"config override {override}")


def test_steps_and_warm_up_beyond_max_iter_are_said_at_the_start(tmp_path, capsys):
    result = tiny(capsys, "--config", config(tmp_path), "solver.max_iter=3", "solver.steps=[100]",
                  "solver.warmup_iters=5")
    assert result.code == 0, result.err[-2000:]
    lines = ["solver.steps [100] reach solver.max_iter 3 or beyond: the learning rate never decays",
             "solver.warmup_iters 5 >= solver.max_iter 3: the whole run is warm-up"]
    with open(tmp_path / "run" / "log.txt") as f:
        log = f.read()
    for line in lines:
        assert sum(line in printed for printed in result.err.splitlines()) == 1, result.err[-2000:]  # once
        assert line in log
    quiet = tiny(capsys, "--config", config(tmp_path, name="quiet"))  # steps [4], warm-up 1 of 6: nothing said
    assert quiet.code == 0 and "solver.steps" not in quiet.err and "warmup_iters" not in quiet.err


# Detection and semantic configs: each refused before any data is read (the files need not exist).
_NO_DATA = {"train": ("train.json", "train"), "val": ("val.json", "val")}


@pytest.mark.parametrize("override, names", [
    ("input.min_size_train=[]", ["input.min_size_train", "non-empty", "got []"]),  # was an IndexError
    ("input.min_size_train=[0]", ["input.min_size_train", "positive"]),
    ("model.rpn.anchor_sizes=[0,64,128,256,512]", ["model.rpn.anchor_sizes", "positive"]),  # was a non-finite loss
    ("model.rpn.anchor_sizes=[-32,64,128,256,512]", ["model.rpn.anchor_sizes", "-32"]),
    ("model.rpn.aspect_ratios=[0.0,1.0]", ["model.rpn.aspect_ratios", "positive"]),
    ("model.roi_heads.nms_thresh=1.5", ["model.roi_heads.nms_thresh", "between 0 and 1"]),
    ("model.rpn.bg_iou_thresh=0.9", ["model.rpn.bg_iou_thresh", "fg_iou_thresh"]),
])
def test_detection_config_values_exit_2(tmp_path, capsys, override, names):
    expect_error(run(capsys, "train_det", "--config", DET_CONFIG, *det_overrides(_NO_DATA, tmp_path / "run"),
                     override), 2, *names, case=f"train_det {override}")


@pytest.mark.parametrize("tool_name, config_path, names", [
    ("train_det", SEG_CONFIG, ["shapes_semantic.yaml", "not a detection config", "model.head", "train_det.py"]),
    ("train_seg", DET_CONFIG, ["shapes_mask_rcnn.yaml", "not a semantic segmentation config", "model.arch",
                               "train_seg.py"]),
])
def test_another_tasks_config_is_named_as_such(tmp_path, capsys, tool_name, config_path, names):
    expect_error(run(capsys, tool_name, "--config", config_path, f"output_dir={tmp_path / 'run'}"), 2, *names,
                 case=f"{tool_name} with another task's config")


def test_a_typo_is_not_called_another_tasks_config(tmp_path, capsys):
    line = expect_error(tiny(capsys, "--config", config(tmp_path), "model.widht=8"), 2, "model.widht", "width")
    assert "not a" not in line


def test_missing_config_file(tmp_path, capsys):
    expect_error(tiny(capsys, "--config", str(tmp_path / "nope.yaml")), 2, "nope.yaml", case="config file missing")


def test_config_file_that_is_not_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver: {base_lr: 0.1\nmodel: [")
    expect_error(tiny(capsys, "--config", str(bad)), 2, "bad.yaml", case="config file with a YAML syntax error")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a GPU")
def test_fp16_on_the_cpu(tmp_path, capsys):
    expect_error(tiny(capsys, "--config", config(tmp_path), "solver.amp=fp16"), 2, "solver.amp",
                 case="solver.amp=fp16 on a CPU")


def test_fresh_run_into_a_finished_run_is_refused(finished_run, capsys):
    path, _ = finished_run
    expect_error(tiny(capsys, "--config", path), 2, "--resume", "output_dir",
                 case="fresh run into an output_dir holding checkpoints")


# ---------------------------------------------------------------------------------------- resume

def test_resume_with_a_changed_learning_rate_stops_with_the_diff(finished_run, capsys):
    path, run_dir = finished_run
    original = (run_dir / "config.yaml").read_text()
    line = expect_error(tiny(capsys, "--config", path, "--resume", "solver.base_lr=0.1", "solver.max_iter=8"), 2,
                        "solver.base_lr 0.05 -> 0.1", "--allow-config-change", "model_0000006.pth",
                        case="--resume with a changed solver.base_lr")
    assert "max_iter" not in line  # run length may change
    assert (run_dir / "config.yaml").read_text() == original
    assert not [p for p in os.listdir(run_dir) if p.startswith("config.resume")]


def test_resume_may_change_the_run_length_and_writes_its_config_beside(finished_run, capsys):
    path, run_dir = finished_run
    original = (run_dir / "config.yaml").read_text()
    result = tiny(capsys, "--config", path, "--resume", "solver.max_iter=8", "logging.log_period=2")
    assert result.code == 0, result.err[-2000:]
    changed = next(line for line in result.out.splitlines() if "resuming with a changed config" in line)
    assert "logging.log_period" in changed and "solver.max_iter" in changed and "base_lr" not in changed
    assert (run_dir / "config.yaml").read_text() == original  # never overwritten
    assert yaml.safe_load((run_dir / "config.resume-6.yaml").read_text())["solver"]["max_iter"] == 8


def test_overrides_on_both_sides_of_resume(finished_run, capsys):
    path, run_dir = finished_run  # argparse stopped on the second run of overrides: "unrecognized arguments"
    result = tiny(capsys, "--config", path, "solver.max_iter=8", "--resume", "logging.log_period=2")
    assert result.code == 0, result.err[-2000:]
    resumed = yaml.safe_load((run_dir / "config.resume-6.yaml").read_text())
    assert resumed["solver"]["max_iter"] == 8 and resumed["logging"]["log_period"] == 2


def test_resume_with_allow_config_change(finished_run, capsys):
    path, run_dir = finished_run
    result = tiny(capsys, "--config", path, "--resume", "--allow-config-change", "solver.base_lr=0.1",
                  "solver.max_iter=7")
    assert result.code == 0, result.err[-2000:]
    assert "solver.base_lr" in result.out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["solver"]["base_lr"] == 0.05
    assert yaml.safe_load((run_dir / "config.resume-6.yaml").read_text())["solver"]["base_lr"] == 0.1


def test_resume_changed_model_stops_before_loading(finished_run, capsys):
    path, _ = finished_run
    expect_error(tiny(capsys, "--config", path, "--resume", "model.width=16", "solver.max_iter=8"), 2,
                 "model.width 8 -> 16", case="--resume with a changed model (width)")


def test_resume_skips_a_truncated_newest_checkpoint_and_removes_temporaries(finished_run, capsys):
    path, run_dir = finished_run
    ckpts = run_dir / "checkpoints"
    newest = ckpts / "model_0000006.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut by a crash while copied
    stale = ckpts / ".tmp-model_0000008.pth.abc123"
    stale.write_bytes(b"half a checkpoint")  # left by a kill during a write
    result = tiny(capsys, "--config", path, "--resume", "solver.max_iter=7")
    assert result.code == 0, result.err[-2000:]
    assert "skipping unreadable checkpoint" in result.err and "model_0000006.pth" in result.err
    assert "resuming from" in result.out and "model_0000004.pth" in result.out
    assert not stale.exists()


# ------------------------------------------------------------------------------------ interruption

def _interrupt_at(monkeypatch, step: int):
    """Ctrl-C (a real SIGINT to this process) during training step ``step``."""
    task_class = tool(TINY).TinyTask
    calls = {"n": 0}
    real = task_class.training_step

    def step_and_interrupt(self, model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, model, batch)

    monkeypatch.setattr(task_class, "training_step", step_and_interrupt)


def test_ctrl_c_saves_the_step_and_names_the_resume_command(tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 3)
    path = config(tmp_path, solver={"checkpoint_period": 100})
    line = expect_error(tiny(capsys, "--config", path), 130, "interrupted at iteration 3", "model_0000003.pth",
                        "--resume", case="Ctrl-C during training")
    assert os.path.isfile(tmp_path / "run" / "checkpoints" / "model_0000003.pth"), line


def test_ctrl_c_before_training(tmp_path, capsys, monkeypatch):
    def interrupted_build(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(tool(TINY).TinyTask, "build_model", interrupted_build)
    expect_error(tiny(capsys, "--config", config(tmp_path)), 130, "nothing saved", case="Ctrl-C before training")


# -------------------------------------------------------------------------------------------- disk

def _fail_writes_after(monkeypatch, good: int, error: BaseException):
    """torch.save succeeds ``good`` times (checkpoints), then raises ``error`` (a full disk)."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > good:
            if hasattr(f, "write"):
                f.write(b"PK\x03\x04 partial")
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("error, case", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full while checkpointing (OSError ENOSPC)"),
    (RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 2240 vs 2134"),
     "disk full while checkpointing (torch's inline_container.cc)"),
])
def test_disk_full_while_checkpointing_keeps_the_last_good_one(tmp_path, capsys, monkeypatch, error, case):
    _fail_writes_after(monkeypatch, 1, error)  # the checkpoint at iteration 2 is written, the one at 4 is not
    line = expect_error(tiny(capsys, "--config", config(tmp_path)), 1, "model_0000004.pth", "the disk mounted at",
                        "model_0000002.pth", "is kept", case=case)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["model_0000002.pth"], line  # no temporary left behind
    monkeypatch.undo()
    assert torch.load(ckpts / "model_0000002.pth", weights_only=True)["iteration"] == 2


def test_output_dir_that_cannot_be_written(tmp_path, capsys):
    # /sys refuses new entries even to root, which a chmod'ed folder does not
    expect_error(tiny(capsys, "--config", config(tmp_path), "output_dir=/sys/reskit-read-only-run"), 2,
                 "output_dir", "/sys/reskit-read-only-run", case="output_dir not writable")


def test_output_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    expect_error(tiny(capsys, "--config", config(tmp_path), f"output_dir={target}"), 2, "output_dir", str(target),
                 case="output_dir is a file")


# ------------------------------------------------------------------------------------- bad numbers

def test_non_finite_loss_names_the_newest_finite_checkpoint(tmp_path, capsys):
    from engine.sampler import TrainBatchSampler

    nan_index = TrainBatchSampler(48, 8, 0, 1, seed=0).permutation(0)[4 * 8 + 1]  # in step 5
    expect_error(tiny(capsys, "--config", config(tmp_path), f"data.nan_index={nan_index}"), 1,
                 "non-finite loss at iteration 5", "model_0000004.pth", case="non-finite loss")


def test_bad_sample_names_the_file(tmp_path, capsys):
    expect_error(tiny(capsys, "--config", config(tmp_path), "data.bad_index=5"), 1, "images/00005.png",
                 case="undecodable training image (tiny task)")


def test_config_changes_ignore_keys_of_another_version():
    from engine.resume import config_changes

    old = {"solver": {"base_lr": 0.1, "gone": 1}, "model": {"width": 8}}
    new = {"solver": {"base_lr": 0.2}, "model": {"width": 8, "weights_partial": []}}
    assert config_changes(old, new) == [("solver.base_lr", 0.1, 0.2)]
