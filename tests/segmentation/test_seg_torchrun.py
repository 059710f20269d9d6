"""torchrun --nproc_per_node=2 on the CPU trains the semantic task; the confusion matrix summed over
the two ranks' shards gives the numbers one process finds for the same weights."""
import json
import os
import re
import subprocess
import sys

import pytest

from seg_testutils import TRAIN_SEG, free_port, shapes, tool_env, write_config

pytestmark = pytest.mark.slow


def test_two_cpu_ranks_train_and_evaluate(tmp_path):
    data = shapes(tmp_path / "shapes", num_train=16, num_val=7)
    # FrozenBN backbone and GN heads: no batch statistics, so the ranks' models stay identical
    config = write_config(tmp_path, data, model={"backbone": {"name": "resnet18", "dilation": [1, 1],
                                                              "norm": "FrozenBN"}},
                          solver={"ims_per_batch": 4, "max_iter": 4, "checkpoint_period": 2},
                          test={"ims_per_batch": 2, "report": True})  # one image per rank and batch, as below
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               TRAIN_SEG, "--config", config]
    ddp = subprocess.run(command, capture_output=True, text=True, timeout=300, env=tool_env())
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    out = tmp_path / "run"
    with open(out / "results.json") as f:
        results = json.load(f)["sem_seg"]
    assert results["mIoU"] is not None
    with open(out / "metrics.jsonl") as f:
        iters = [json.loads(line)["iter"] for line in f if '"loss"' in line]
    assert iters == [1, 2, 3, 4]  # rank 0 alone logs

    single = subprocess.run([sys.executable, TRAIN_SEG, "--config", config, "--eval-only",
                             f"model.weights={out / 'model_final.pth'}", f"output_dir={tmp_path / 'eval'}",
                             "test.ims_per_batch=1"],
                            capture_output=True, text=True, timeout=300, env=tool_env())
    assert single.returncode == 0, single.stderr[-3000:]
    with open(tmp_path / "eval" / "results_eval.json") as f:
        alone = json.load(f)["sem_seg"]
    for key in ("mIoU", "pixel_accuracy", "mean_accuracy"):
        assert alone[key] == pytest.approx(results[key], abs=1e-6), key
    assert alone["per_class_IoU"].keys() == results["per_class_IoU"].keys()
    for name, value in results["per_class_IoU"].items():
        other = alone["per_class_IoU"][name]
        assert (other is None and value is None) or other == pytest.approx(value), name
    # the report's worst images: each rank's kept, merged on rank 0, are the single process's
    worst = [re.findall(r"<figcaption>(mIoU [^<]*)</figcaption>", (d / "report" / "index.html").read_text())
             for d in (out, tmp_path / "eval")]
    assert len(worst[0]) == 7 and worst[0] == worst[1]
