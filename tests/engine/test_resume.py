"""Kill-and-resume: a run SIGKILLed mid-way (or while writing a checkpoint) and resumed ends bitwise
equal to an uninterrupted one (CPU, deterministic). The task has momentum, random augmentation drawn
from the sample seeds, dropout, EMA and evaluations in between, so any lost state shows."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import run_tiny, tiny_command, tool_env, write_config
from engine.checkpoint import Checkpointer, load_checkpoint

pytestmark = pytest.mark.slow

RUN = dict(solver={"max_iter": 24, "checkpoint_period": 5, "ema": True, "ema_decay": 0.8},
           test={"eval_period": 4, "ims_per_batch": 16})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference")
    result = run_tiny(write_config(directory, "ref", **RUN))
    assert result.returncode == 0, result.stderr
    return os.path.join(directory, "ref")


def assert_same_weights(run_a, run_b):
    a = load_checkpoint(os.path.join(run_a, "model_final.pth"))
    b = load_checkpoint(os.path.join(run_b, "model_final.pth"))
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    # the momentum buffers of the last checkpoint too
    last = "checkpoints/model_0000024.pth"
    oa = load_checkpoint(os.path.join(run_a, last))["optimizer"]["state"]
    ob = load_checkpoint(os.path.join(run_b, last))["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        assert torch.equal(oa[k]["momentum_buffer"], ob[k]["momentum_buffer"])
    with open(os.path.join(run_a, "results.json")) as fa, open(os.path.join(run_b, "results.json")) as fb:
        assert json.load(fa) == json.load(fb)


def train_iterations_logged(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip().endswith("}")]
    return [r["iter"] for r in lines if "loss" in r]


def test_sigkill_at_arbitrary_iteration_then_resume_is_bitwise_equal(tmp_path, reference):
    # Two loader workers here, none in the reference: the stream must not depend on them.
    config = write_config(tmp_path, "run", data={"num_workers": 2, "delay": 0.01}, **RUN)
    run_dir = os.path.join(tmp_path, "run")
    proc = subprocess.Popen(tiny_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=tool_env())
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        logged = train_iterations_logged(run_dir)
        if logged and logged[-1] >= 13:  # past the checkpoints at 5 and 10, between two of them
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(run_dir, "model_final.pth")), "killed too late"
    killed_at = train_iterations_logged(run_dir)[-1]
    newest, _ = Checkpointer(run_dir).all()[-1]
    assert 10 <= newest < killed_at < 24

    result = run_tiny(config, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"model_{newest:07d}.pth (iteration {newest})" in result.stdout
    assert_same_weights(reference, run_dir)
    # metrics.jsonl: the iterations redone after the resume replace the killed run's records
    assert train_iterations_logged(run_dir) == list(range(1, 25))


def test_crash_while_writing_a_checkpoint_keeps_a_loadable_one(tmp_path, reference):
    config = write_config(tmp_path, "run", **RUN)
    run_dir = os.path.join(tmp_path, "run")
    env = tool_env()
    env["TINY_KILL_DURING_SAVE"] = "model_0000010.pth"
    killed = subprocess.run(tiny_command(config), capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(ckpt_dir))[-1] == "model_0000005.pth"
    assert glob.glob(os.path.join(ckpt_dir, ".tmp-model_0000010.pth.*")), "the half-written file"
    assert Checkpointer(run_dir).latest() == os.path.join(ckpt_dir, "model_0000005.pth")
    assert load_checkpoint(os.path.join(ckpt_dir, "model_0000005.pth"))["iteration"] == 5

    result = run_tiny(config, "--resume")
    assert result.returncode == 0, result.stderr
    assert not glob.glob(os.path.join(ckpt_dir, ".tmp-*"))  # cleaned up on resume
    assert_same_weights(reference, run_dir)


def test_ctrl_c_saves_the_last_step_then_resume_is_bitwise_equal(tmp_path, reference):
    config = write_config(tmp_path, "run", data={"num_workers": 2, "delay": 0.01}, **RUN)
    run_dir = os.path.join(tmp_path, "run")
    proc = subprocess.Popen(tiny_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=tool_env(), text=True)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        logged = train_iterations_logged(run_dir)
        if logged and logged[-1] >= 12:  # between the checkpoints at 10 and 15
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    newest, path = Checkpointer(run_dir).all()[-1]
    assert 12 <= newest < 24, "the interrupt's own checkpoint, not the periodic one at 10"
    assert lines[0] == (f"error: interrupted at iteration {newest}: saved {path}; continue with: "
                        f"python {tiny_command(config)[1]} --config {config} --resume")
    assert not os.path.exists(os.path.join(run_dir, "model_final.pth"))

    result = run_tiny(config, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_weights(reference, run_dir)
