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
    store = rdist.dist.HashStore()
    monkeypatch.setattr(rdist, "_STORE", None)
    monkeypatch.setattr(rdist, "get_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(rdist.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(rdist.dist, "rendezvous", lambda url, timeout: iter([(store, 1, 2)]))
    monkeypatch.setenv("WORLD_SIZE", "1")
    rdist.init_distributed("gloo", 60)
    assert calls == []  # a world of one process: no process group
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the rendezvous stays env://
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    rdist.init_distributed("auto", 60)
    (kw,) = calls
    assert {k: kw[k] for k in ("backend", "timeout", "rank", "world_size")} == {
        "backend": "gloo", "timeout": datetime.timedelta(seconds=60), "rank": 1, "world_size": 2}
    # each torchrun attempt writes its own keys: a restarted group never reads the dead one's addresses
    kw["store"].set("k", "v")
    assert store.get("reskit/attempt_2/k") == b"v"
    assert rdist.restart_count() == 2


def test_nccl_environment_set_unless_the_user_did(monkeypatch):
    for key in rdist.NCCL_ENV:
        monkeypatch.setenv(key, "recorded")  # monkeypatch then restores the variable as it was
        monkeypatch.delenv(key)
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    chosen = rdist._nccl_environment()
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in chosen
    assert rdist.os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert chosen == {k: v for k, v in rdist.NCCL_ENV.items() if k != "TORCH_NCCL_ASYNC_ERROR_HANDLING"}
    assert all(rdist.os.environ[k] == v for k, v in chosen.items())


def test_peer_failure_is_recognised_only_in_a_process_group(monkeypatch):
    error = RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:30120: Connection reset by peer")
    assert not rdist.is_peer_failure(error)  # no process group: not a peer's fault
    monkeypatch.setattr(rdist, "is_dist", lambda: True)
    assert rdist.is_peer_failure(error)
    assert rdist.is_peer_failure(rdist.dist.DistNetworkError("Failed to recv, got 0 bytes"))
    assert not rdist.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not rdist.is_peer_failure(RuntimeError("DataLoader timed out after 5 seconds"))
    assert not rdist.is_peer_failure(ValueError("gloo"))
