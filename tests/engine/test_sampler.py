import itertools

import pytest

from engine.sampler import InferenceSampler, TrainBatchSampler


def take(it, n):
    return list(itertools.islice(it, n))


def test_deterministic_and_covers_each_epoch_once():
    a = TrainBatchSampler(50, 10, 0, 1, seed=3)
    b = TrainBatchSampler(50, 10, 0, 1, seed=3)
    first, second = take(iter(a), 12), take(iter(b), 12)
    assert first == second
    flat = [s for batch in first for s in batch]
    assert sorted(i for i, _ in flat[:50]) == list(range(50))  # epoch 0 is a permutation
    assert sorted(i for i, _ in flat[50:100]) == list(range(50))
    assert [i for i, _ in flat[:50]] != [i for i, _ in flat[50:100]]  # reshuffled per epoch
    assert take(iter(TrainBatchSampler(50, 10, 0, 1, seed=4)), 1) != first[:1]
    # a sample's seed depends on (seed, epoch, index): same index in two epochs -> different seeds
    seeds = {}
    for pos, (i, s) in enumerate(flat):
        seeds.setdefault(i, []).append((pos // 50, s))
    for i, pairs in seeds.items():
        assert len({s for _, s in pairs}) == len(pairs)


@pytest.mark.parametrize("groups", [None, [i % 3 for i in range(37)]])
def test_resume_at_any_position_is_the_tail(groups):
    n = 37
    full = take(TrainBatchSampler(n, 6, 0, 1, seed=1, group_ids=groups).global_batches(0), 40)
    for k in (0, 1, 5, 6, 17, 31):
        s = TrainBatchSampler(n, 6, 0, 1, seed=1, group_ids=groups, start_batch=k)
        assert take(iter(s), 40 - k) == full[k:]


@pytest.mark.parametrize("world,accumulate", [(2, 1), (4, 1), (2, 2), (1, 4)])
def test_union_of_rank_shards_is_the_one_process_batch(world, accumulate):
    n, batch, steps = 45, 8, 15
    single = take(iter(TrainBatchSampler(n, batch, 0, 1, seed=7)), steps)
    per_rank = [take(iter(TrainBatchSampler(n, batch, r, world, seed=7, accumulate=accumulate)),
                     steps * accumulate) for r in range(world)]
    for t in range(steps):
        union = []
        for r in range(world):
            micro = per_rank[r][t * accumulate:(t + 1) * accumulate]
            assert all(len(m) == batch // world // accumulate for m in micro)
            union += [s for m in micro for s in m]
        assert union == single[t]  # same samples, same seeds, in the same order


def test_group_batches_keep_groups():
    groups = [0 if i % 4 else 1 for i in range(60)]  # a quarter in group 1
    s = TrainBatchSampler(60, 5, 0, 1, seed=0, group_ids=groups)
    batches = take(s.global_batches(), 30)
    for b in batches:
        assert len(b) == 5 and len({groups[i] for i, _ in b}) == 1
    assert {groups[b[0][0]] for b in batches} == {0, 1}
    # sharded across ranks, every rank's shard of a step comes from the same group
    shards = [take(iter(TrainBatchSampler(60, 4, r, 2, seed=0, group_ids=groups)), 10) for r in range(2)]
    for a, b in zip(*shards):
        assert len({groups[i] for i, _ in a + b}) == 1


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match=r"ims_per_batch=10 .* 4 x 1"):
        TrainBatchSampler(100, 10, 0, 4)
    with pytest.raises(ValueError, match=r"2 x 2 = 4"):
        TrainBatchSampler(100, 6, 0, 2, accumulate=2)


def test_epoch_of():
    s = TrainBatchSampler(100, 25, 0, 1)
    assert s.epoch_of(0) == 0 and s.epoch_of(4) == 1 and s.epoch_of(6) == 1.5


def test_inference_sampler_shards_contiguously_without_padding():
    shards = [list(InferenceSampler(10, r, 3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(InferenceSampler(2, r, 4)) for r in range(4)] == [1, 1, 0, 0]
