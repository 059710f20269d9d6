"""Data loading shared by every task: loaders over our samplers, bad-sample handling, seeding."""
from __future__ import annotations

import os
import random
import re
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sampler import InferenceSampler, TrainBatchSampler


class DataError(ValueError):
    """Bad input data (an unreadable image, a malformed annotation file).

    The message is one line meant for the user: it names the file (and the record) and says what to do.
    """


def user_message(exc: BaseException) -> str:
    """The message a user should see for ``exc``, without a DataLoader worker's traceback.

    An exception raised in a loader worker comes back re-raised as ``type(exc)("Caught DataError in
    DataLoader worker process 0.\\nOriginal Traceback (most recent call last): ... DataError: <msg>")``;
    the original message is the text after the exception's name on the traceback's last entry.
    """
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    name = re.escape(type(exc).__name__)
    # The last "<module.>Name: message" line of the traceback starts the original message.
    matches = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, flags=re.MULTILINE))
    if not matches:
        return text.strip().splitlines()[-1]
    return text[matches[-1].end():].strip()


class SkippingCollate:
    """Wraps a task's collate: drops the ``None`` samples a dataset skipped and returns
    ``(batch, number_skipped)`` so the trainer can count them. A class, not a closure, so loader
    workers can pickle it."""

    def __init__(self, collate_fn: Callable[[list], Any]):
        self.collate_fn = collate_fn

    def __call__(self, samples: list):
        kept = [s for s in samples if s is not None]
        skipped = len(samples) - len(kept)
        if not kept:
            raise DataError(f"all {len(samples)} samples of a batch were skipped as unreadable; "
                            "check the dataset (the skipped files are named in the warnings above)")
        return self.collate_fn(kept), skipped


def _worker_init(worker_id: int) -> None:
    # Datasets draw their randomness from the sample_seed; this only keeps stray uses of the global
    # RNGs in a worker reproducible (torch seeds its own RNG per worker; numpy and random need help).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(dataset: Dataset, sampler: TrainBatchSampler, collate_fn: Callable[[list], Any],
                       num_workers: int, pin_memory: Optional[bool] = None, seed: int = 0,
                       prefetch_factor: int = 2) -> DataLoader:
    """A DataLoader over :class:`TrainBatchSampler`'s micro-batches; each item is ``(batch, skipped)``.

    Its own ``generator`` keeps the loader from drawing the workers' base seed from the global torch
    RNG, which would make the training randomness depend on when the loader was started (a resume).
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=_worker_init)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=SkippingCollate(collate_fn),
                      num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **kwargs)


def build_inference_loader(dataset: Dataset, batch_size: int, collate_fn: Callable[[list], Any],
                           num_workers: int = 0, pin_memory: Optional[bool] = None) -> DataLoader:
    """This rank's shard of ``dataset`` (``InferenceSampler``) in batches of ``batch_size``; dataset
    items are plain indices. Gather the per-rank outputs with ``engine.sampler.gather_in_order``."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(dataset, batch_size=batch_size, sampler=InferenceSampler(len(dataset)),
                      collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0),
                      worker_init_fn=_worker_init if num_workers > 0 else None)


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors inside (nested) lists, tuples and dicts to ``device``; 4-D floating tensors become
    channels-last when asked."""
    if isinstance(batch, torch.Tensor):
        non_blocking = batch.is_pinned()
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            return batch.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device, channels_last)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, channels_last) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, channels_last) for v in batch)
    return batch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    seed = int(seed) % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(flag: bool) -> None:
    """Bitwise-reproducible kernels (``deterministic: true``) or the fastest ones.

    Deterministic mode makes an op without a deterministic implementation raise instead of silently
    differing between runs. CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS starts, so call this early.
    """
    if flag:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(flag)
    torch.backends.cudnn.deterministic = flag
    torch.backends.cudnn.benchmark = not flag
