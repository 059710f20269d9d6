"""Loader workers keep sharing their rank's Python objects (engine.data.freeze_before_fork).

A forked worker shares its parent's pages until something writes to them; CPython's cyclic collector
writes into the header of every object it visits, so one full collection in a worker copies every page
that holds the parent's objects. The project's loaders freeze the parent's objects before forking:
a collection in the worker then leaves those pages shared."""
import gc
import sys

import pytest
from torch.utils.data import DataLoader, Dataset

from engine.data import build_inference_loader


def _private_bytes() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("Private_Dirty:", "Private_Clean:")))


class CollectInWorker(Dataset):
    """Each item: how much private memory one full collection cost the worker that read it."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        before = _private_bytes()
        gc.collect()
        return _private_bytes() - before


def _first(loader) -> int:
    return int(next(iter(loader))[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps_rollup")
def test_a_collection_in_a_worker_copies_no_page_of_the_rank():
    parent_objects = [[i] for i in range(400_000)]  # ~40 MB of objects the collector tracks
    try:
        plain = _first(DataLoader(CollectInWorker(), batch_size=1, num_workers=1))
        ours = _first(build_inference_loader(CollectInWorker(), 1, lambda items: items, num_workers=1))
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert len(parent_objects) == 400_000
    assert plain > 20e6, f"a plain DataLoader's worker copied only {plain / 1e6:.1f} MB: the test proves nothing"
    assert ours < plain / 5, f"the worker copied {ours / 1e6:.1f} MB (a plain loader's: {plain / 1e6:.1f} MB)"
