"""Helpers for the segmentation tool tests: tiny shapes data and configs."""
from __future__ import annotations

import os
import socket

import yaml

from detection.synthetic import make_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_SEG = os.path.join(REPO, "tools", "train_seg.py")


def shapes(directory, num_train=16, num_val=6, size=64):
    return make_shapes_dataset(str(directory), num_train=num_train, num_val=num_val, size=size, seed=0)


def write_config(directory, data, name="run", **sections) -> str:
    """A tiny semantic FPN (ResNet-18) on ``data`` (make_shapes_dataset's result); sections merge over it."""
    (train_json, train_images), (val_json, val_images) = data["train"], data["val"]
    cfg = {
        "output_dir": os.path.join(str(directory), name),
        "seed": 0,
        "model": {"head": "semantic_fpn", "num_classes": 7, "head_norm": "GN", "head_channels": 32,
                  "fpn_channels": 32, "backbone": {"name": "resnet18", "dilation": [1, 1], "norm": "BN"}},
        "data": {"train": [{"coco": {"json": train_json, "images": train_images, "categories": "all"}}],
                 "val": [{"coco": {"json": val_json, "images": val_images, "categories": "all"}}],
                 "num_workers": 0, "min_train_area": -1, "base_size": 64, "crop_size": 64, "eval_resize": False},
        "solver": {"optimizer": "AdamW", "base_lr": 0.001, "ims_per_batch": 4, "max_iter": 3,
                   "checkpoint_period": 3},
        "test": {"ims_per_batch": 4, "report": False},  # the report's own tests turn it on
        "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = os.path.join(str(directory), f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env
