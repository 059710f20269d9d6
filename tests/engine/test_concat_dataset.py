"""engine.data.ConcatDataset: the one way every task joins its data.train / data.val lists."""
import pytest

from engine.data import ConcatDataset, DataError, split_item


class Items:
    """Returns what it was asked for, so the test sees the local index and the seed."""

    def __init__(self, name, n, stats=None):
        self.name, self.n = name, n
        if stats is not None:
            self.stats = stats

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return self.name, item


def test_global_index_maps_to_dataset_and_local_index():
    ds = ConcatDataset([Items("a", 2), Items("b", 0), Items("c", 3)])
    assert len(ds) == 5 and ds.cumulative_sizes == [2, 2, 5]
    assert [ds[i] for i in range(5)] == [("a", 0), ("a", 1), ("c", 0), ("c", 1), ("c", 2)]
    assert ds[-1] == ("c", 2) and ds.locate(-5) == (0, 0)
    with pytest.raises(IndexError):
        ds[5]


def test_sample_seed_passes_through():
    ds = ConcatDataset([Items("a", 2), Items("b", 3)])
    assert ds[(3, 17)] == ("b", (1, 17))  # training: the sampler's (index, sample_seed) pair
    assert ds[3] == ("b", 1)  # evaluation: a plain index stays plain
    assert split_item((4, 9)) == (4, 9) and split_item(4) == (4, None)


def test_stats_are_summed_and_empty_lists_refused():
    ds = ConcatDataset([Items("a", 1, {"images": 1, "dropped": 2}), Items("b", 1, {"images": 4}), Items("c", 1)])
    assert ds.stats == {"images": 5, "dropped": 2}
    with pytest.raises(ValueError, match="no datasets"):
        ConcatDataset([])


def test_datasets_must_share_what_the_task_asks():
    a, b = Items("a", 1), Items("b", 1)
    a.num_classes, b.num_classes = 3, 4
    b.json_path = "b.json"
    with pytest.raises(DataError, match=r"b.json: its num_classes \(4\) differs from dataset 0 of the list's \(3\); "
                                        "give every dataset the same label space"):
        ConcatDataset([a, b]).shared("num_classes", "give every dataset the same label space")
    b.num_classes = 3
    assert ConcatDataset([a, b]).shared("num_classes", "") == 3
