"""Data loading shared by every task: datasets joined end to end, loaders over our samplers,
bad-sample handling, seeding.

torch is imported inside the functions that use it: :class:`DataError` and :class:`ConcatDataset`
are needed by tools that must start without torch (``tools/check_dataset.py``, ``tools/eval_coco.py``).
"""
from __future__ import annotations

import bisect
import functools
import gc
import os
import random
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader, Dataset

    from .sampler import TrainBatchSampler

Item = Union[int, Tuple[int, int]]


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


def split_item(item: Item) -> Tuple[int, Optional[int]]:
    """``(index, sample_seed)`` of a dataset item: a plain index (evaluation; the seed is None) or the
    engine sampler's ``(index, sample_seed)`` pair (training, :class:`engine.sampler.TrainBatchSampler`)."""
    if isinstance(item, (tuple, list)):
        index, seed = item
        return int(index), int(seed)
    return int(item), None


class ConcatDataset:
    """Datasets end to end as one, for every task (``data.train`` / ``data.val`` are lists).

    Global index ``i`` is item ``i - start`` of the dataset whose range holds it (negative indices
    count from the end); the engine sampler's ``(index, sample_seed)`` pairs pass the seed through.
    ``stats`` sums the per-dataset ``stats`` dicts (what each dataset dropped, skipped, counted).
    The tasks subclass it to check that the datasets share a label space and to expose it
    (:class:`detection.coco_dataset.ConcatCocoDetection`, :class:`segmentation.data.ConcatSegmentation`,
    :class:`classification.data.ConcatClassification`).

    Not a ``torch.utils.data.ConcatDataset``, whose module imports torch: a DataLoader only needs
    ``__len__`` and ``__getitem__``.
    """

    def __init__(self, datasets: Sequence):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: no datasets to join")
        self.cumulative_sizes: List[int] = []
        total = 0
        for ds in self.datasets:
            total += len(ds)
            self.cumulative_sizes.append(total)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def locate(self, index: int) -> Tuple[int, int]:
        """``(which dataset, index inside it)`` of global ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        return which, index - (self.cumulative_sizes[which - 1] if which else 0)

    def __getitem__(self, item: Item):
        index, seed = split_item(item)
        which, local = self.locate(index)
        return self.datasets[which][(local, seed) if seed is not None else local]

    def shared(self, attribute: str, remedy: str) -> Any:
        """The value of ``attribute`` (e.g. a label space) on which every dataset must agree; a
        DataError names the first dataset that differs and says ``remedy``."""
        first = getattr(self.datasets[0], attribute)
        for i, ds in enumerate(self.datasets[1:], 1):
            value = getattr(ds, attribute)
            if value != first:
                raise DataError(f"{_describe(ds, i)}: its {attribute} ({_short(value)}) differs from "
                                f"{_describe(self.datasets[0], 0)}'s ({_short(first)}); {remedy}")
        return first

    @property
    def stats(self) -> Dict[str, int]:
        total: Dict[str, int] = {}
        for ds in self.datasets:
            for k, v in getattr(ds, "stats", {}).items():
                total[k] = total.get(k, 0) + v
        return total


def _describe(dataset: Any, position: int) -> str:
    return getattr(dataset, "json_path", None) or f"dataset {position} of the list"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def freeze_before_fork() -> None:
    """Collect, then move every object this process holds into the collector's permanent generation
    (``gc.freeze``), just before loader workers are forked.

    A forked worker shares its rank's pages until something writes to them, and CPython's cyclic
    collector writes into the header of every object it visits: one full collection in a worker copies
    every page holding the rank's Python objects (the imports, the model, the dataset), so each worker
    slowly becomes a private copy of its rank's heap. Frozen objects are never visited, in the rank or
    in the workers, so those pages stay shared (the ``gc.freeze`` documentation's recipe for fork without
    exec). The cost: a cycle among objects alive now is never collected later; everything alive at
    that moment (model, optimizer, datasets) lives for the whole run anyway."""
    gc.collect()
    gc.freeze()


@functools.lru_cache(maxsize=None)
def _loader_class() -> type:
    # A DataLoader whose workers start from a frozen heap (freeze_before_fork). _get_iterator is the
    # one place every worker start goes through (the first iter() of a persistent loader, each iter()
    # of another); torch is imported here, not at module level (the module docstring says why).
    from torch.utils.data import DataLoader

    class ForkFriendlyLoader(DataLoader):
        def _get_iterator(self):
            if self.num_workers > 0:
                freeze_before_fork()
            return super()._get_iterator()

    return ForkFriendlyLoader


def build_train_loader(dataset: "Dataset", sampler: "TrainBatchSampler", collate_fn: Callable[[list], Any],
                       num_workers: Union[int, str], pin_memory: Optional[bool] = None, seed: int = 0,
                       prefetch_factor: int = 2) -> DataLoader:
    """A DataLoader over :class:`TrainBatchSampler`'s micro-batches; each item is ``(batch, skipped)``.

    Its own ``generator`` keeps the loader from drawing the workers' base seed from the global torch
    RNG, which would make the training randomness depend on when the loader was started (a resume).
    """
    import torch

    from .hardware import resolve_num_workers  # "auto" -> an int for this machine

    num_workers = resolve_num_workers(num_workers)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=_worker_init)
    return _loader_class()(dataset, batch_sampler=sampler, collate_fn=SkippingCollate(collate_fn),
                      num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **kwargs)


def build_inference_loader(dataset: "Dataset", batch_size: int, collate_fn: Callable[[list], Any],
                           num_workers: Union[int, str] = 0, pin_memory: Optional[bool] = None) -> "DataLoader":
    """This rank's shard of ``dataset`` (``InferenceSampler``) in batches of ``batch_size``; dataset
    items are plain indices. Gather the per-rank outputs with ``engine.sampler.gather_in_order``."""
    import torch

    from .hardware import resolve_num_workers  # "auto" -> an int for this machine
    from .sampler import InferenceSampler

    num_workers = resolve_num_workers(num_workers)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return _loader_class()(dataset, batch_size=batch_size, sampler=InferenceSampler(len(dataset)),
                      collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0),
                      worker_init_fn=_worker_init if num_workers > 0 else None)


def move_to_device(batch: Any, device: "torch.device", channels_last: bool = False) -> Any:
    """Tensors inside (nested) lists, tuples and dicts to ``device``; 4-D floating tensors become
    channels-last when asked."""
    import torch

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
    import torch

    seed = int(seed) % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(flag: bool) -> None:
    """Bitwise-reproducible kernels (``deterministic: true``) or the fastest ones.

    Deterministic mode makes an op without a deterministic implementation raise instead of silently
    differing between runs. CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS starts, so call this early.
    """
    import torch

    if flag:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(flag)
    torch.backends.cudnn.deterministic = flag
    torch.backends.cudnn.benchmark = not flag
