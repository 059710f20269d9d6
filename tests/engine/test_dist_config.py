"""engine/dist.py: the config's dist.backend and dist.timeout reach torch.distributed's process group."""
import datetime

import pytest
import torch

from engine import dist as rdist
from engine.config import ConfigError


def test_backend_choice():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert rdist.resolve_backend("auto", cpu) == "gloo" and rdist.resolve_backend("auto", gpu) == "nccl"
    assert rdist.resolve_backend("gloo", gpu) == "gloo"
    with pytest.raises(ConfigError, match="nccl needs a CUDA GPU"):
        rdist.resolve_backend("nccl", cpu)


def test_init_passes_backend_and_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(rdist, "get_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(rdist.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setenv("WORLD_SIZE", "1")
    rdist.init_distributed("gloo", 60)
    assert calls == []  # a world of one process: no process group
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the rendezvous stays env://
    rdist.init_distributed("auto", 60)
    assert calls == [{"backend": "gloo", "timeout": datetime.timedelta(seconds=60)}]
