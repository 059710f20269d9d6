"""torchrun --nproc_per_node=2 on the CPU (gloo) trains the same weights as one process with the same
global batch (GroupNorm: no batch statistics), here with gradient accumulation on top."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY, free_port, run_tiny, tool_env, write_config
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

# No dropout: each rank draws its own masks, which one process cannot reproduce. fp32: with amp auto a
# CPU with native bf16 would train in bf16, whose rounding is far above 1e-5.
RUN = dict(model={"dropout": 0.0}, solver={"max_iter": 12, "checkpoint_period": 6, "amp": "off"},
           test={"eval_period": 6, "ims_per_batch": 16})


def test_two_ranks_match_one_process(tmp_path):
    single = run_tiny(write_config(tmp_path, "single", **RUN))
    assert single.returncode == 0, single.stderr

    config = write_config(tmp_path, "ddp", **{**RUN, "solver": {**RUN["solver"], "accumulate": 2}})
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", TINY, "--config", config]
    ddp = subprocess.run(command, capture_output=True, text=True, timeout=180, env=tool_env())
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "deprecated" not in ddp.stderr, ddp.stderr[-3000:]  # DDP's arguments as this torch names them

    a = load_checkpoint(os.path.join(tmp_path, "single", "model_final.pth"))["model"]
    b = load_checkpoint(os.path.join(tmp_path, "ddp", "model_final.pth"))["model"]
    assert a.keys() == b.keys()
    for name in a:
        relative = (a[name] - b[name]).norm() / a[name].norm().clamp_min(1e-12)
        assert relative < 1e-5, f"{name}: relative difference {relative:.2e}"
    # the weights moved: the comparison is not between two untrained models
    init = load_checkpoint(os.path.join(tmp_path, "ddp", "checkpoints", "model_0000006.pth"))
    assert not torch.equal(init["model"]["fc.weight"], b["fc.weight"])
    assert len(init["rng"]) == 2  # each rank's RNG state is saved

    with open(os.path.join(tmp_path, "ddp", "results.json")) as f:
        results = json.load(f)
    assert results["num_images"] == 40  # both ranks' shards gathered, none twice
    with open(os.path.join(tmp_path, "single", "results.json")) as f:
        assert results == json.load(f)
    # the gradients went through shared memory (bitwise gloo's with two ranks), or the log says why not
    with open(os.path.join(tmp_path, "ddp", "log.txt")) as f:
        line = next(line for line in f if "gradient averaging:" in line)
    assert "2 CPU ranks on this machine" in line or "gloo all-reduce (/dev/shm has" in line, line
    with open(os.path.join(tmp_path, "ddp", "hardware.json")) as f:
        assert json.load(f)["gradient_averaging"] in line
    # only rank 0 wrote the metrics: one record per iteration
    with open(os.path.join(tmp_path, "ddp", "metrics.jsonl")) as f:
        iters = [json.loads(line)["iter"] for line in f if '"loss"' in line]
    assert iters == list(range(1, 13))


def test_buffers_broadcast_only_for_running_statistics():
    """DDP broadcasts rank 0's buffers before each forward only where batch norm updates them."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from engine.trainer import tracks_running_stats

    assert tracks_running_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)))
    assert tracks_running_stats(torch.nn.Sequential(torch.nn.SyncBatchNorm(8)))
    assert not tracks_running_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), FrozenBatchNorm2d(8)))
    assert not tracks_running_stats(torch.nn.Sequential(torch.nn.GroupNorm(2, 8)))
    assert not tracks_running_stats(torch.nn.BatchNorm2d(8, track_running_stats=False))
