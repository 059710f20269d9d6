"""tools/train_cls.py end to end on tiny synthetic data, fine-tuning set-up, mixup, bad data through the tool."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from backbones import build_backbone, build_classifier, load_weights
from classification.config import ClsConfig
from classification.task import ClassificationTask
from backbones.transfer import transfer_weights
from engine.checkpoint import load_checkpoint
from engine.config import ConfigError, load_config
from engine.optim import param_groups

from conftest import PYTHON, ROOT, encode_pil, random_rgb, write_png

TINY = {
    "seed": 0,
    "deterministic": False,
    "model": {"backbone": {"name": "resnet18"}, "num_classes": 4},
    "data": {"train": [{"synthetic": {"num_images": 64, "image_size": 32, "num_classes": 4, "seed": 1}}],
             "val": [{"synthetic": {"num_images": 12, "image_size": 32, "num_classes": 4, "seed": 2}}],
             "num_workers": 0, "recipe": "shapes", "crop_size": 32, "resize_size": 32},
    "solver": {"base_lr": 0.01, "ims_per_batch": 8, "max_iter": 3, "checkpoint_period": 3, "lr_schedule": "constant"},
    "test": {"eval_period": 0, "ims_per_batch": 8, "report": False},  # on where a test checks it
    "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False},
}


def _write(tmp_path, name="tiny", **sections):
    cfg = json.loads(json.dumps(TINY))
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    cfg["output_dir"] = str(tmp_path / name)
    path = str(tmp_path / f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def _run_tool(argv):
    """tools/train_cls.py in this process (its imports are what takes time)."""
    spec = importlib.util.spec_from_file_location("train_cls_tool", os.path.join(ROOT, "tools", "train_cls.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = sys.argv
    sys.argv = ["train_cls.py"] + argv
    try:
        return module.main()
    finally:
        sys.argv = saved


def test_short_run_writes_the_outputs_then_eval_only_and_transfer(tmp_path):
    config = _write(tmp_path, test={"report": True})
    results = _run_tool(["--config", config])
    out = tmp_path / "tiny"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results and set(results) >= {"top1", "num_images"} and results["num_images"] == 12
    assert 0 <= results["top1"] <= 100 and "top5" not in results  # 4 classes: top-5 would be 100 by construction
    report = (out / "report" / "index.html").read_text()  # the final evaluation's report
    for section in ("Classification", "Confusion matrix", "Most confident mistakes", "The run"):
        assert f"<h2>{section}</h2>" in report
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss_cls" in r] == [1, 2, 3]
    log = (out / "log.txt").read_text()  # what the run had and chose, in the log as on the console
    assert "training set (1 source): " in log and "; per class: circle " in log and "dropped or skipped: none" in log
    assert "evaluation at iter 3: top1 " in log
    final = load_checkpoint(str(out / "model_final.pth"))
    meta = final["meta"]
    assert meta["class_names"] == ["circle", "square", "triangle", "star"] and meta["backbone"]["name"] == "resnet18"
    assert meta["input_norm"]["mean"] == [0.485, 0.456, 0.406] and final["model"]["fc.weight"].shape == (4, 512)

    again = _run_tool(["--config", config, "--eval-only", "test.ten_crop=true", "data.resize_size=36"])
    assert again["view"] == "ten_crop" and again["num_images"] == 12
    assert json.loads((out / "results_eval.json").read_text()) == again

    result = transfer_weights(str(out / "model_final.pth"), str(tmp_path / "r18_backbone.pth"))
    assert result.complete and result.dropped == ["fc.weight", "fc.bias"]
    backbone = build_backbone("resnet18", out_features=["res2", "res3", "res4", "res5"])
    report = load_weights(backbone, str(tmp_path / "r18_backbone.pth"))
    assert not report.missing and not report.unexpected and not report.mismatched
    assert torch.equal(backbone.state_dict()["layer4.1.conv2.weight"], final["model"]["layer4.1.conv2.weight"])


def test_fine_tuning_new_head_frozen_stages_and_lower_backbone_lr(tmp_path):
    torch.manual_seed(0)
    pretrained = build_classifier("resnet18", 10)
    torch.save(pretrained.state_dict(), str(tmp_path / "r18_10cls.pth"))  # a torchvision-style file
    cfg = load_config(ClsConfig, _write(tmp_path), [
        f"model.backbone.weights={tmp_path / 'r18_10cls.pth'}", "model.backbone.freeze_at=2",
        "model.backbone.lr_mult=0.1", "model.head_lr_mult=2.0", "model.drop_rate=0.3"])
    task = ClassificationTask(cfg)
    model = task.build_model()
    assert model.fc.weight.shape == (4, 512) and model.fc.drop_rate == 0.3
    state = pretrained.state_dict()
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    assert not model.conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad
    groups = param_groups(model, cfg.solver, task.param_lr_mults(model))
    by_mult = {g["lr_mult"]: g for g in groups}
    assert set(by_mult) == {0.1, 2.0}
    assert {id(p) for p in by_mult[2.0]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4)

    bad = load_config(ClsConfig, _write(tmp_path), [f"model.backbone.weights={tmp_path / 'r18_10cls.pth'}",
                                                    "model.backbone.name=resnet34"])
    with pytest.raises(ConfigError, match=r"model\.backbone\.weights: .*does not fit resnet34: \d+ missing tensors"):
        ClassificationTask(bad).build_model()
    wrong_count = load_config(ClsConfig, _write(tmp_path), ["model.num_classes=7"])
    with pytest.raises(ConfigError, match=r"model\.num_classes: 7, but the data has 4 classes"):
        ClassificationTask(wrong_count)


def test_mixup_and_cutmix_with_label_smoothing_even_and_odd_batches(tmp_path):
    cfg = load_config(ClsConfig, _write(tmp_path), ["data.mixup=0.2", "data.cutmix=1.0", "data.label_smoothing=0.1"])
    task = ClassificationTask(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    dataset = task.train_dataset()
    for n in (4, 5):
        batch = task.collate([dataset[(i, i)] for i in range(n)])
        images, targets = task._mix(task.normalize(batch["images"]), batch["labels"])
        assert images.shape == batch["images"].shape and targets.shape == (n, 4)
        assert torch.allclose(targets.sum(1), torch.ones(n))
        loss = task.training_step(model, batch)["loss_cls"]
        assert torch.isfinite(loss)
    assert targets[-1].max() == pytest.approx(0.9 + 0.1 / 4)  # the odd one out: smoothed one-hot


def _folder_with_a_corrupt_image(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(3):
            write_png(str(tmp_path / "data" / cls / f"{i}.png"), random_rgb(rng, 32, 32))
    bad = tmp_path / "data" / "b" / "1.png"
    bad.write_bytes(encode_pil(__import__("PIL.Image").Image.fromarray(random_rgb(rng, 32, 32)), "PNG")[:40])
    return str(tmp_path / "data"), str(bad)


def test_a_corrupt_image_stops_the_tool_with_its_name_or_is_skipped(tmp_path):
    root, bad = _folder_with_a_corrupt_image(tmp_path)
    data = {"train": [{"root": root}], "val": [{"root": root}], "num_workers": 1, "recipe": "cifar",
            "crop_size": 32, "resize_size": 32}
    config = _write(tmp_path, "bad", data=data, model={"backbone": {"name": "cifar_resnet20"}, "num_classes": 2},
                    solver={"ims_per_batch": 6, "max_iter": 2, "checkpoint_period": 2})
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "train_cls.py"), "--config", config],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    # the one line of ours (OpenCV's own "[ WARN ...]" lines from the worker may come around it)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    last = errors[0]
    assert last.startswith(f"error: {bad}: not an image OpenCV can decode") and "data.skip_bad" in last
    assert "Traceback" not in proc.stderr

    results = _run_tool(["--config", config, "data.skip_bad=true", "data.num_workers=0",
                         f"output_dir={tmp_path / 'skipping'}"])
    assert results["skipped"] == 1 and results["num_images"] == 5
    records = [json.loads(line) for line in (tmp_path / "skipping" / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("skipped", 0) for r in records) >= 1


def test_eval_only_rebuilds_the_recorded_network_without_the_starting_weights(tmp_path, caplog):
    """A run that started from backbone weights at width 16: --eval-only with only model.weights works
    at once though the starting weights are gone and the config says another width; without
    model.weights it evaluates output_dir/model_final.pth (docs/configs.md, docs/tools.md)."""
    start = tmp_path / "r18_w16.pth"
    torch.save(build_classifier("resnet18", width=16).state_dict(), start)
    config = _write(tmp_path, model={"backbone": {"name": "resnet18", "width": 16, "weights": str(start)},
                                     "num_classes": 4})
    _run_tool(["--config", config])
    os.remove(start)
    final = str(tmp_path / "tiny" / "model_final.pth")
    plain = _write(tmp_path, name="plain", model={"backbone": {"name": "resnet18", "weights": str(start)},
                                                  "num_classes": 4})
    caplog.set_level("INFO")
    results = _run_tool(["--config", plain, "--eval-only", f"model.weights={final}"])
    assert results["num_images"] == 12
    assert "model.backbone width=16 (config: None)" in caplog.text
    default = _run_tool(["--config", config, "--eval-only"])  # output_dir/model_final.pth
    assert default["top1"] == results["top1"]


def test_no_validation_data_trains_to_the_end_without_evaluating(tmp_path, caplog):
    """data.val: [] (training on train+val): the run says once that it will not evaluate, trains to
    the end and writes model_final.pth, no results.json (detectron2 trains without a test set too)."""
    config = _write(tmp_path, data={**TINY["data"], "val": []})
    caplog.set_level("INFO")
    results = _run_tool(["--config", config])
    out = tmp_path / "tiny"
    assert results == {} and (out / "model_final.pth").is_file() and not (out / "results.json").exists()
    said = [r.getMessage() for r in caplog.records if "no validation data" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("no validation data (data.val is empty): training without evaluation")
    assert "no validation data (data.val is empty)" in (out / "log.txt").read_text()


def test_corrupt_jpeg_data_warnings_name_the_file_in_the_log(tmp_path):
    """A JPEG that libjpeg decodes with "Corrupt JPEG data" (printed on the C stderr, no file named):
    the run logs one warning naming the file, in log.txt too, from the loader worker that read it."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "detection"))
    from coco_fixtures import corrupt_jpeg

    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for cls in ("a", "b"):
        for i in range(3):
            write_png(str(root / cls / f"{i}.png"), random_rgb(rng, 32, 32))
    bad = root / "a" / "cut.jpg"
    corrupt_jpeg(str(bad), 32)
    data = {"train": [{"root": str(root)}], "val": [], "num_workers": 1, "recipe": "cifar",
            "crop_size": 32, "resize_size": 32}
    config = _write(tmp_path, "jpeg", data=data, model={"backbone": {"name": "cifar_resnet20"}, "num_classes": 2},
                    solver={"ims_per_batch": 7, "max_iter": 2, "checkpoint_period": 2})
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "train_cls.py"), "--config", config],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / "jpeg" / "log.txt").read_text()
    named = [line for line in log.splitlines() if "Corrupt JPEG data" in line]
    assert len(named) == 1 and f"{bad}: the decoder says: Corrupt JPEG data" in named[0], log[-2000:]
    unnamed = [line for line in proc.stderr.splitlines() if "Corrupt JPEG data" in line and str(bad) not in line]
    assert not unnamed, proc.stderr[-2000:]
    # --eval-only names it as well (it printed libjpeg's line alone)
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "train_cls.py"), "--config", config, "--eval-only",
                           f"data.val=[{{root: {root}}}]"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "Corrupt JPEG data" in line]
    assert lines and all(f"{bad}: the decoder says: Corrupt JPEG data" in line for line in lines), lines


def test_resume_reads_no_starting_weights(tmp_path, caplog):
    """The checkpoint replaces every weight: a resume runs after the backbone file has gone and says so
    (that it continues the checkpoint bitwise is tests/engine/test_resume.py's)."""
    import logging

    start = tmp_path / "r18.pth"
    torch.manual_seed(0)
    torch.save(build_classifier("resnet18", 10).state_dict(), str(start))
    path = _write(tmp_path, solver={**TINY["solver"], "max_iter": 2, "checkpoint_period": 1})
    _run_tool(["--config", path, f"model.backbone.weights={start}"])
    start.unlink()
    with pytest.raises(SystemExit):  # a fresh run still needs it: one line, exit code 2
        _run_tool(["--config", _write(tmp_path, name="other"), f"model.backbone.weights={start}"])
    with caplog.at_level(logging.INFO):
        _run_tool(["--config", path, f"model.backbone.weights={start}", "--resume", "solver.max_iter=3"])
    assert f"starting weights not read ({start})" in caplog.text and "resuming from" in caplog.text
