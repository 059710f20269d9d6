"""The bad-input corpus's harness: run a tool's ``main`` in this process (importing torch once for the
whole corpus instead of once per case) and check that it ends with ONE ``error: ...`` line naming
what is wrong, the right exit code and no traceback.

Set ``RESKIT_CORPUS_TABLE=FILE`` to append each case's ``case | exit code | message`` to FILE (the
table of the issue's closing note).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DET_CONFIG = os.path.join(ROOT, "configs", "demo", "shapes_mask_rcnn.yaml")
SEG_CONFIG = os.path.join(ROOT, "configs", "demo", "shapes_semantic.yaml")
CLS_CONFIG = os.path.join(ROOT, "configs", "demo", "shapes_cls.yaml")

_TOOLS: dict = {}


def tool(name: str):
    """``tools/<name>.py`` as a module (its ``main``), imported once."""
    if name not in _TOOLS:
        path = os.path.join(ROOT, "tools", f"{name}.py") if not os.path.isabs(name) else name
        spec = importlib.util.spec_from_file_location(f"reskit_tool_{os.path.basename(name)}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]


# Tools whose ``__main__`` wraps ``main`` in engine.launch.run_tool (the others call fail() themselves).
_WRAPPED = {"train_cls", "train_det", "train_seg", "predict", "plot_metrics"}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self):
        return [line for line in self.err.splitlines() if line.startswith("error: ")]


def run(capsys, name: str, *argv: str) -> Result:
    """Run tool ``name`` with ``argv`` as its command line; the exit code and what it printed."""
    from engine.launch import run_tool

    module = tool(name)
    saved_argv, det, bench = sys.argv, torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    sys.argv = [module.__file__, *argv]  # what the resume command of a Ctrl-C repeats
    code = 0
    try:
        if os.path.basename(name).removesuffix(".py") in _WRAPPED or name.endswith("tiny_task.py"):
            run_tool(module.main)
        elif hasattr(module, "cli"):  # export.py: cli(argv) is main wrapped as its __main__ runs it
            module.cli(list(argv))
        else:
            code = module.main(list(argv)) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved_argv
        torch.use_deterministic_algorithms(det)
        torch.backends.cudnn.benchmark = bench
    out, err = capsys.readouterr()
    return Result(code, out, err)


def expect_error(result: Result, code: int, *names: str, case: Optional[str] = None) -> str:
    """The one error line, after checking the exit code, that there is no traceback and that the
    line names each of ``names``."""
    assert "Traceback" not in result.err, result.err[-3000:]
    lines = result.error_lines
    assert len(lines) == 1, f"expected one error line, got {lines!r}\n{result.err[-2000:]}"
    assert result.code == code, (result.code, lines[0])
    for name in names:
        assert name in lines[0], (name, lines[0])
    record(case, code, lines[0])
    return lines[0]


def record(case: Optional[str], code: int, message: str) -> None:
    table = os.environ.get("RESKIT_CORPUS_TABLE")
    if table and case:
        with open(table, "a", encoding="utf-8") as f:
            f.write(f"{case} | {code} | {message}\n")


def write_json(path, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return str(path)


def det_overrides(data: dict, out_dir, **extra) -> list:
    """A tiny Mask R-CNN (ResNet-18 FPN of 32 channels, GN, 64 px) on ``data`` (make_shapes_dataset's)."""
    values = {
        "output_dir": str(out_dir), "seed": 1,
        "data.train.0.json": data["train"][0], "data.train.0.images": data["train"][1],
        "data.val.0.json": data["val"][0], "data.val.0.images": data["val"][1],
        "data.num_workers": 0, "model.fpn_channels": 32,
        "model.backbone.freeze_at": 0, "model.backbone.norm": "GN",
        "input.min_size_train": "[64]", "input.max_size_train": 64, "input.min_size_test": 64,
        "input.max_size_test": 64, "solver.ims_per_batch": 2, "solver.max_iter": 1, "solver.steps": "[1]",
        "solver.warmup_iters": 1, "solver.amp": "off", "solver.channels_last": "false", "test.ims_per_batch": 2,
        "logging.progress_bar": False, "logging.tensorboard": False, "logging.log_period": 1,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
