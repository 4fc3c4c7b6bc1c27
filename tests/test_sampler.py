"""The global shuffled stream and the per-rank batch samplers built on it."""
import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from sat_accel.data.mixture import MixtureStream
from sat_accel.data.sampler import ShuffledStream, StreamBatchSampler, StrictEvalBatchSampler


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


class Identity(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i)


def test_every_epoch_is_a_fresh_exact_permutation():
    n = 97
    stream = ShuffledStream(n, seed=1)
    epochs = stream.indices(np.arange(4 * n)).reshape(4, n)
    for row in epochs:
        assert np.array_equal(np.sort(row), np.arange(n))
    assert len({tuple(row) for row in epochs.tolist()}) == 4


def test_stream_depends_on_seed():
    a = ShuffledStream(50, seed=1).indices(np.arange(50))
    b = ShuffledStream(50, seed=2).indices(np.arange(50))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_cover_an_epoch_disjointly(world_size):
    batch_size, steps = 4, 5
    n = batch_size * world_size * steps
    seen = []
    for rank in range(world_size):
        sampler = StreamBatchSampler(ShuffledStream(n, seed=9), batch_size, rank, world_size)
        seen += [i for batch in take(sampler, steps) for i in batch]
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("world_size", [2, 3])
def test_global_order_does_not_depend_on_world_size(world_size):
    n, batch_size = 53, 4  # ragged on purpose: epochs end inside batches
    single = StreamBatchSampler(ShuffledStream(n, 5), batch_size * world_size, 0, 1)
    per_rank = [take(StreamBatchSampler(ShuffledStream(n, 5), batch_size, r, world_size), 30)
                for r in range(world_size)]
    for k, big_batch in enumerate(take(single, 30)):
        assert big_batch == [i for r in range(world_size) for i in per_rank[r][k]]


def test_resume_at_any_batch_equals_the_continuous_stream():
    stream_args = (41, 3)
    continuous = take(StreamBatchSampler(ShuffledStream(*stream_args), 6, 1, 2), 40)
    for k in (0, 1, 7, 13, 39):
        resumed = StreamBatchSampler(ShuffledStream(*stream_args), 6, 1, 2)
        resumed.load_state_dict({"consumed_samples": k * resumed.global_batch_size})
        assert take(resumed, 40 - k) == continuous[k:]


def test_state_is_one_integer_that_advances_per_batch():
    sampler = StreamBatchSampler(ShuffledStream(10, 0), batch_size=3, rank=0, world_size=2)
    assert sampler.state_dict() == {"consumed_samples": 0}
    iterator = iter(sampler)
    next(iterator), next(iterator)
    assert sampler.consumed_samples == 12
    assert sampler.state_dict() == {"consumed_samples": 12}
    sampler.set_consumed_samples(6)
    assert next(iter(sampler)) == StreamBatchSampler(ShuffledStream(10, 0), 3, 0, 2).stream.indices(
        np.arange(6, 9)).tolist()
    with pytest.raises(ValueError):
        sampler.set_consumed_samples(-1)


def test_dataset_smaller_than_a_global_batch_wraps_into_next_epochs():
    n = 3
    batches = [take(StreamBatchSampler(ShuffledStream(n, 4), 4, r, 2), 3) for r in range(2)]
    flat = [i for k in range(3) for r in range(2) for i in batches[r][k]]  # global order
    assert len(flat) == 24
    for e in range(8):
        assert sorted(flat[e * n:(e + 1) * n]) == [0, 1, 2]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("num_workers", [0, 1, 4])
def test_dataloader_workers_see_the_stream_and_resume_exactly(num_workers):
    def loader():
        sampler = StreamBatchSampler(ShuffledStream(37, 8), batch_size=5, rank=1, world_size=2)
        kwargs = {"prefetch_factor": 3} if num_workers else {}
        return DataLoader(Identity(37), batch_sampler=sampler, num_workers=num_workers, **kwargs)

    expected = take(StreamBatchSampler(ShuffledStream(37, 8), 5, 1, 2), 12)
    first = loader()
    got = [b.tolist() for b in itertools.islice(first, 12)]
    assert got == expected
    resumed = loader()
    resumed.batch_sampler.set_consumed_samples(7 * resumed.batch_sampler.global_batch_size)
    assert [b.tolist() for b in itertools.islice(resumed, 5)] == expected[7:]


def test_strict_eval_counts_every_example_once_with_a_ragged_tail():
    n, batch_size, world_size = 23, 4, 2  # 3 global batches of 8; the last has 7 real examples
    real = []
    for rank in range(world_size):
        sampler = StrictEvalBatchSampler(n, batch_size, rank, world_size)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 3
        for k, batch in enumerate(batches):
            assert len(batch) == max(sampler.real_size(k), 1) and all(0 <= i < n for i in batch)
            real += batch[:sampler.real_size(k)]
    assert sorted(real) == list(range(n))
    assert [StrictEvalBatchSampler(n, 4, r, 2).real_size(2) for r in range(2)] == [4, 3]


def test_strict_eval_rank_with_only_padding():
    sampler = StrictEvalBatchSampler(5, batch_size=4, rank=1, world_size=2)
    assert len(sampler) == 1 and sampler.real_size(0) == 1
    other = StrictEvalBatchSampler(3, batch_size=4, rank=1, world_size=2)
    assert other.real_size(0) == 0 and len(list(other)[0]) == 1   # one padding example, counted as 0


def test_mixture_proportions_and_exact_source_epochs():
    sizes, weights = [30, 50], [2, 1]  # virtual sizes 60 and 50 -> shares 60/110, 50/110
    stream = MixtureStream(sizes, weights, seed=11)
    assert stream.counts == [60, 50] and stream.epoch_length == 110
    indices = stream.indices(np.arange(110 * 3))
    for chunk in indices.reshape(3, 110):
        first = chunk[chunk < 30]
        assert len(first) == 60  # exactly c_i per mixture epoch
        assert np.array_equal(np.sort(first), np.repeat(np.arange(30), 2))  # two source epochs
        assert np.array_equal(np.sort(chunk[chunk >= 30]), np.arange(30, 80))


def test_mixture_proportions_over_a_window():
    stream = MixtureStream([1000, 4000], [3, 1], seed=2)  # expected share 3000/7000
    source, _ = stream.sources(np.arange(20000, 24000))
    share = float(np.mean(source == 0))
    assert abs(share - 3 / 7) < 0.03


def test_mixture_source_is_a_pure_function_of_position():
    a = MixtureStream([10, 20], [1, 1], seed=3).indices(np.arange(500, 600))
    b = MixtureStream([10, 20], [1, 1], seed=3)
    b.indices(np.arange(0, 100))  # unrelated calls first: no hidden state may leak
    assert np.array_equal(b.indices(np.arange(500, 600)), a)
