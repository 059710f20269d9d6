"""Shared helpers for the engine tests: the tiny task's config and a way to run it as a tool."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "tiny_task.py")
sys.path.insert(0, HERE)

# Every setting spelled out: a nested key given in YAML rebuilds its section from the class defaults.
BASE = {
    "seed": 0,
    "deterministic": True,
    "data": {"num_workers": 0, "num_train": 96, "num_val": 40},
    "model": {"dropout": 0.2, "width": 8},
    "solver": {"base_lr": 0.05, "ims_per_batch": 8, "max_iter": 20, "steps": [12], "warmup_iters": 3,
               "checkpoint_period": 5, "momentum": 0.9, "weight_decay": 1e-4},
    "test": {"eval_period": 0, "ims_per_batch": 16},
    "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False},
}


def write_config(directory, name="run", **sections) -> str:
    """A YAML file for the tiny task with ``sections`` merged over BASE; output_dir = directory/name."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    cfg["output_dir"] = os.path.join(str(directory), name)
    path = os.path.join(str(directory), f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def tiny_command(config: str, *args: str):
    return [sys.executable, TINY, "--config", config, *args]


def run_tiny(config: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(tiny_command(config, *args), capture_output=True, text=True, timeout=timeout,
                          env=tool_env())


def tool_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_config_for(config: str):
    from engine.config import load_config
    from tiny_task import TinyConfig
    return load_config(TinyConfig, config)


@pytest.fixture
def restore_torch_state():
    """In-process training flips global switches (deterministic kernels, RNG); put them back."""
    det = torch.are_deterministic_algorithms_enabled()
    bench = torch.backends.cudnn.benchmark
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()  # the trainer applies the thread policy (engine.hardware)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
    torch.backends.cudnn.benchmark = bench
    torch.set_rng_state(rng)
