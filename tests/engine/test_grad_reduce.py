"""Gradient averaging through shared memory (engine.grad_reduce): the path it takes and why, and that
DDP with it computes what gloo's all-reduce computes, bitwise, over several buckets and steps."""
import glob
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from engine.config import ConfigError
from engine.grad_reduce import SHM_DIR, SharedMemoryAverager, choose_grad_reduce

CPU = torch.device("cpu")
MB = 1 << 20


def test_auto_takes_shared_memory_only_for_cpu_ranks_on_one_machine():
    path, reason = choose_grad_reduce("auto", CPU, "gloo", 2, 2, 1000, 500 * MB)
    assert path == "shared_memory" and "2 CPU ranks on this machine" in reason
    assert choose_grad_reduce("auto", CPU, "gloo", 1, 1, 1000, 500 * MB) == ("default", "one process")
    path, reason = choose_grad_reduce("auto", CPU, "gloo", 4, 2, 1000, 500 * MB)
    assert path == "default" and "2 of the 4 ranks run on other machines" in reason
    path, reason = choose_grad_reduce("auto", torch.device("cuda", 0), "nccl", 2, 2, 1000, 500 * MB)
    assert path == "default" and reason.startswith("nccl all-reduce")
    # 2 x 2 ranks x a 4M-float chunk = 64 MB and 64 MB of headroom: more than /dev/shm has (Docker's default is 64 MB)
    path, reason = choose_grad_reduce("auto", CPU, "gloo", 2, 2, 10_000_000, 64 * MB)
    assert path == "default" and "/dev/shm has 64 MB free" in reason
    # the file holds 2 x ranks x one chunk (4M floats), not every gradient: 64 MB for 2 ranks of any model
    path, reason = choose_grad_reduce("auto", CPU, "gloo", 2, 2, 100_000_000, 200 * MB)
    assert path == "shared_memory" and "(64 MB)" in reason
    assert choose_grad_reduce("auto", CPU, "gloo", 2, 2, 1000, -1) == ("default", "gloo all-reduce (no /dev/shm on "
                                                                              "this system)")
    assert choose_grad_reduce("gloo", CPU, "gloo", 2, 2, 1000, 500 * MB)[0] == "default"


def test_asking_for_shared_memory_where_it_cannot_be_had_stops_with_the_reason():
    with pytest.raises(ConfigError, match="shared_memory: .*other machines; use auto or gloo"):
        choose_grad_reduce("shared_memory", CPU, "gloo", 4, 2, 1000, 500 * MB)
    with pytest.raises(ConfigError, match="grad_reduce: 'shm' is not a valid value"):
        choose_grad_reduce("shm", CPU, "gloo", 2, 2, 1000, 500 * MB)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def _worker(rank: int, world: int, init_file: str, out: str, chunk) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    # bucket_cap_mb tiny: one bucket per layer or so, and DDP rebuilds them after the first step
    kwargs = dict(bucket_cap_mb=0.01, gradient_as_bucket_view=True)
    plain = nn.parallel.DistributedDataParallel(_model(), **kwargs)
    shared = nn.parallel.DistributedDataParallel(_model(), **kwargs)
    averager = SharedMemoryAverager(sum(p.numel() for p in shared.parameters()), chunk=chunk)
    shared.register_comm_hook(averager, averager.hook)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    grads = []
    for _ in range(4):
        x, y = torch.randn(8, 16, generator=generator), torch.randint(0, 4, (8,), generator=generator)
        for model in (plain, shared):
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
        grads.append(([p.grad.clone() for p in plain.parameters()], [p.grad.clone() for p in shared.parameters()]))
    torch.save(grads, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _run(tmp_path, world: int, chunk=None) -> list:
    before = set(glob.glob(os.path.join(SHM_DIR, "reskit-grads-*")))
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path), chunk), nprocs=world, join=True)
    # the file is unlinked as soon as every rank has mapped it
    assert set(glob.glob(os.path.join(SHM_DIR, "reskit-grads-*"))) == before
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


@pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm")
@pytest.mark.parametrize("chunk", [None, 301])  # 301: every bucket (~2,600 gradients) in several odd pieces
def test_two_ranks_average_exactly_as_gloo_does(tmp_path, chunk):
    ranks = _run(tmp_path, 2, chunk)
    for step in range(4):
        for (gloo, shared) in zip(*ranks[0][step]):
            assert torch.equal(gloo, shared)  # bitwise: halving is exact, so (a + b) / 2 == a / 2 + b / 2
        for r in (0, 1):
            assert all(torch.equal(a, b) for a, b in zip(ranks[0][step][1], ranks[r][step][1]))
    # the ranks' batches differ, so the average is not one rank's own gradient
    assert not torch.equal(ranks[0][0][0][0], ranks[0][1][0][0])


@pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm")
def test_three_ranks_agree_bitwise_and_average(tmp_path):
    ranks = _run(tmp_path, 3, chunk=301)
    for step in range(4):
        shared = [ranks[r][step][1] for r in range(3)]
        for r in (1, 2):
            assert all(torch.equal(a, b) for a, b in zip(shared[0], shared[r]))
        for gloo, ours in zip(ranks[0][step][0], shared[0]):
            torch.testing.assert_close(ours, gloo, rtol=1e-6, atol=1e-7)
