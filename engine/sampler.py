"""Which samples each rank reads, as a pure function of (seed, position): deterministic and resumable.

Training reads an endless stream of *global* batches. Epoch ``e`` is a permutation of the dataset drawn
from a generator seeded with ``(seed, e)``; the epochs are concatenated, so a batch may straddle two
epochs and no sample is dropped. Global batch ``t`` is cut into ``world_size`` contiguous shards (one
per rank), each shard into ``accumulate`` micro-batches. Hence:

- the union of the ranks' shards at step ``t`` is the batch a single process reads at step ``t``;
- the stream started at ``start_batch=k`` is the tail of the stream started at 0 (resume = save ``k``);
- every sample comes as ``(index, sample_seed)`` where ``sample_seed`` depends on ``(seed, epoch,
  index)`` only, so augmentation does not depend on workers, ranks, or resumes.

torch's DistributedSampler pads and re-shuffles per epoch given ``set_epoch`` and cannot start in the
middle of an epoch; torchvision's GroupedBatchSampler is neither deterministic across processes nor
resumable; hence this file.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

from .dist import gather_to_main, get_rank, get_world_size

Sample = Tuple[int, int]  # (dataset index, sample_seed)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A well-mixed seed in [0, 2**63) from integers (splitmix64 chain): nearby inputs give unrelated
    seeds, unlike ``seed + epoch``, which would make epoch 1 of seed 0 equal epoch 0 of seed 1."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h >> 1


def seed_compose(compose, seed: int) -> None:
    """Seed an albumentations ``Compose`` and give each of its transforms a generator of its own.

    ``Compose.set_random_seed(seed)`` hands every child transform the *same* seed, so their first
    draws are equal: two p=0.5 transforms would always fire together (a flip would always come with
    a given crop position or scale). Each child is therefore reseeded with ``derive_seed(seed, position)``.
    Used by every task's per-sample augmentation.
    """
    compose.set_random_seed(seed)
    for k, transform in enumerate(compose.transforms):
        transform.set_random_seed(derive_seed(seed, k))


class TrainBatchSampler(Sampler[List[Sample]]):
    """Endless batch sampler for ``DataLoader(batch_sampler=...)``; yields this rank's micro-batches.

    Args:
        num_samples: length of the training set.
        global_batch: samples per optimizer step over all ranks and accumulation steps.
        rank, world_size: this process's place (default: from torch.distributed).
        seed: the run's seed.
        shuffle: permute each epoch (False: dataset order, for tests and debugging).
        group_ids: one int per sample; each global batch then holds samples of one group, in the order
            the permutation reaches them (like torchvision's GroupedBatchSampler). Samples left in a
            group's buffer at the end of an epoch carry over to the next one.
        start_batch: global batches already consumed (the position saved in checkpoints).
        accumulate: micro-batches per optimizer step on each rank.
    """

    def __init__(self, num_samples: int, global_batch: int, rank: Optional[int] = None,
                 world_size: Optional[int] = None, seed: int = 0, shuffle: bool = True,
                 group_ids: Optional[Sequence[int]] = None, start_batch: int = 0, accumulate: int = 1):
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
        if num_samples < 1:
            raise ValueError("the training set is empty: check data.train")
        if global_batch % (world_size * accumulate) != 0:
            raise ValueError(
                f"solver.ims_per_batch={global_batch} must be divisible by world size x solver.accumulate "
                f"= {world_size} x {accumulate} = {world_size * accumulate}; pick a multiple of "
                f"{world_size * accumulate}")
        if group_ids is not None and len(group_ids) != num_samples:
            raise ValueError(f"group_ids has {len(group_ids)} entries for {num_samples} samples")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_ids = None if group_ids is None else [int(g) for g in group_ids]
        self.start_batch = start_batch
        self.accumulate = accumulate
        self.per_rank = global_batch // world_size
        self.micro_batch = self.per_rank // accumulate
        self._cached: Tuple[int, List[int]] = (-1, [])

    # ---------------------------------------------------------------------------------- the stream

    def permutation(self, epoch: int) -> List[int]:
        if self._cached[0] != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
                order = torch.randperm(self.num_samples, generator=g).tolist()
            else:
                order = list(range(self.num_samples))
            self._cached = (epoch, order)
        return self._cached[1]

    def sample(self, epoch: int, index: int) -> Sample:
        return index, derive_seed(self.seed, epoch, index)

    def global_batches(self, start_batch: int = 0) -> Iterator[List[Sample]]:
        """Global batches ``start_batch, start_batch + 1, ...`` (what one process would read)."""
        if self.group_ids is not None:
            yield from self._grouped_batches(start_batch)
            return
        batch = start_batch
        while True:
            yield self._slice(batch, 0, self.global_batch)
            batch += 1

    def _slice(self, batch: int, lo: int, hi: int) -> List[Sample]:
        """Items ``lo:hi`` of (ungrouped) global batch ``batch``, computed alone: a rank need not
        build the whole global batch of a large world."""
        n, first = self.num_samples, batch * self.global_batch
        out = []
        for position in range(first + lo, first + hi):
            epoch = position // n
            out.append(self.sample(epoch, self.permutation(epoch)[position % n]))
        return out

    def _grouped_batches(self, start_batch: int) -> Iterator[List[Sample]]:
        # Replays the stream from batch 0: which samples wait in which buffer depends on all that came
        # before. It only computes indices (a randperm per epoch), which is fast next to training.
        buffers: dict = {}
        produced, epoch = 0, 0
        while True:
            for index in self.permutation(epoch):
                buf = buffers.setdefault(self.group_ids[index], [])
                buf.append((epoch, index))
                if len(buf) == self.global_batch:
                    buffers[self.group_ids[index]] = []
                    if produced >= start_batch:  # seeds only for what is read, not for the replay
                        yield [self.sample(e, i) for e, i in buf]
                    produced += 1
            epoch += 1

    def __iter__(self) -> Iterator[List[Sample]]:
        lo = self.rank * self.per_rank
        batch = self.start_batch
        grouped = self.global_batches(batch) if self.group_ids is not None else None
        while True:
            if grouped is not None:
                shard = next(grouped)[lo:lo + self.per_rank]
            else:
                shard = self._slice(batch, lo, lo + self.per_rank)
            batch += 1
            for a in range(self.accumulate):
                yield shard[a * self.micro_batch:(a + 1) * self.micro_batch]

    def epoch_of(self, batch: int) -> float:
        """Epochs completed (fractional) after ``batch`` global batches."""
        return batch * self.global_batch / self.num_samples


class InferenceSampler(Sampler[int]):
    """Contiguous shards of ``range(num_samples)``, one per rank, no padding and no repeats (so every
    sample is evaluated exactly once); use :func:`gather_in_order` to put the results back together."""

    def __init__(self, num_samples: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
        per, extra = divmod(num_samples, world_size)
        self.start = rank * per + min(rank, extra)
        self.end = self.start + per + (1 if rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def gather_in_order(local_results: list) -> list:
    """Concatenate each rank's list of results in rank order, on rank 0 (other ranks get ``[]``).

    With :class:`InferenceSampler` shards, the result is in dataset order. The items travel in
    chunks (``engine.dist.gather_to_main``): no rank but 0 holds another rank's results.
    """
    return gather_to_main(local_results)
