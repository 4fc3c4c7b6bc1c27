"""make_loaders end to end on tiny in-memory datasets (no files, no downloads)."""
import argparse
import dataclasses
import itertools

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from sat_accel.data.loaders import make_loaders
from sat_accel.errors import ConfigError, DataError, HookError


class Numbers(Dataset):
    """Items are (path id * 1000 + index), so every example says where it came from."""

    def __init__(self, base, n):
        self.base, self.n = base, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.tensor(self.base + i)


class Stream(IterableDataset):
    def __init__(self, base, n):
        self.base, self.n = base, n

    def __iter__(self):
        return iter(torch.tensor(self.base + i) for i in range(self.n))


def sizes_from_path(path, args):
    """Paths look like 'a:100' -> Numbers(base for 'a', 100); 'iter:' prefix -> iterable."""
    if path.startswith("missing"):
        raise FileNotFoundError(path)
    kind, _, name = path.rpartition(":") if path.startswith("iter:") else ("", "", path)
    label, n = name.split("=")
    base = 1000 * (ord(label) - ord("a") + 1)
    return Stream(base, int(n)) if kind == "iter" else Numbers(base, int(n))


def make_args(**overrides):
    args = argparse.Namespace(
        train_data=["a=100"], valid_data=None, test_data=None, train_data_weights=None,
        split="1000,1,1", block_size=10000, num_workers=0, prefetch_factor=4, batch_size=4,
        eval_batch_size=None, gradient_accumulation_steps=1, epochs=None, train_iters=10,
        seed=1234, strict_eval=False, iterable_dataset=False, rank=0, world_size=1)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def pull(loader, count):
    return [batch.tolist() for batch in itertools.islice(loader, count)]


def test_default_split_gives_three_loaders_and_flags():
    args = make_args()
    train, valid, test = make_loaders(args, sizes_from_path)
    assert (args.do_train, args.do_valid, args.do_test) == (True, True, True)
    assert len(train.dataset) == 98 and len(valid.dataset) == 1 and len(test.dataset) == 1
    assert train.batch_sampler.global_batch_size == 4
    assert train.batch_sampler.state_dict() == {"consumed_samples": 0}
    seen = {x for batch in pull(train, 25) for x in batch}  # 100 samples > one epoch of 98
    assert seen.isdisjoint(set(pull(valid, 1)[0]) | set(pull(test, 1)[0]))
    assert len(seen) == 98


def test_split_one_and_explicit_eval_paths():
    args = make_args(split="1", valid_data=["b=10", "c=5"], test_data=None)
    train, valid, test = make_loaders(args, sizes_from_path)
    assert test is None and args.do_test is False
    assert len(train.dataset) == 100 and len(valid.dataset) == 15  # two paths concatenated


def test_epochs_set_train_iters_with_gradient_accumulation():
    # ceil(3 epochs * 98 examples / (4 per rank * 2 ranks * GA 2)) = ceil(294 / 16) = 19
    args = make_args(epochs=3, world_size=2, rank=1, gradient_accumulation_steps=2)
    make_loaders(args, sizes_from_path)
    assert args.train_iters == 19


def test_ranks_get_disjoint_slices_of_the_same_global_batch():
    loaders = [make_loaders(make_args(world_size=2, rank=r, split="1"), sizes_from_path)[0]
               for r in range(2)]
    single = make_loaders(make_args(batch_size=8, split="1"), sizes_from_path)[0]
    for big, b0, b1 in zip(pull(single, 20), pull(loaders[0], 20), pull(loaders[1], 20)):
        assert big == b0 + b1


def test_resume_through_the_loader():
    args = make_args(split="1", num_workers=1)
    continuous = pull(make_loaders(args, sizes_from_path)[0], 30)
    resumed = make_loaders(make_args(split="1", num_workers=1), sizes_from_path)[0]
    resumed.batch_sampler.set_consumed_samples(17 * resumed.batch_sampler.global_batch_size)
    assert pull(resumed, 13) == continuous[17:]


def test_weighted_mixture_proportions():
    # virtual sizes: a = 1 * 100, b = 3 * 50 -> b is 150/250 = 60% of the stream
    args = make_args(train_data=["a=100", "b=50"], train_data_weights=[1, 3], split="1")
    train = make_loaders(args, sizes_from_path)[0]
    flat = [x for batch in pull(train, 250) for x in batch]  # 1000 samples = 4 mixture epochs
    assert sum(x >= 2000 for x in flat) == 600  # exact per mixture epoch
    assert sorted(x for x in flat[:250] if x < 2000) == list(range(1000, 1100))


def test_strict_eval_is_finite_and_reports_real_sizes():
    args = make_args(split="1", valid_data=["b=23"], strict_eval=True, eval_batch_size=4,
                     world_size=2)
    real = []
    for rank in range(2):
        args.rank = rank
        valid = make_loaders(args, sizes_from_path)[1]
        assert len(valid) == 3
        for k, batch in enumerate(valid):
            real += batch.tolist()[:valid.batch_sampler.real_size(k)]
    assert sorted(real) == list(range(2000, 2023))


def test_non_strict_eval_is_an_endless_shuffled_stream():
    args = make_args(split="1", valid_data=["b=6"], eval_batch_size=4)
    valid = make_loaders(args, sizes_from_path)[1]
    flat = [x for batch in pull(valid, 6) for x in batch]  # 24 samples = 4 epochs
    assert [sorted(flat[i:i + 6]) for i in range(0, 24, 6)] == [list(range(2000, 2006))] * 4


def test_tiny_dataset_smaller_than_a_global_batch_still_trains():
    args = make_args(train_data=["a=3"], split="1", batch_size=4, world_size=2)
    train = make_loaders(args, sizes_from_path)[0]
    assert all(len(batch) == 4 for batch in pull(train, 5))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterable_dataset_is_sharded_by_rank_and_worker(num_workers):
    seen = []
    for rank in range(2):
        args = make_args(train_data=["iter:a=24"], iterable_dataset=True, split="1", rank=rank,
                         world_size=2, num_workers=num_workers, batch_size=3)
        train = make_loaders(args, sizes_from_path)[0]
        assert getattr(train.batch_sampler, "set_consumed_samples", None) is None
        seen += [x for batch in pull(train, 4) for x in batch]  # 12 per rank = one pass
    assert sorted(seen) == list(range(1000, 1024))


def test_iterable_rejects_epochs_and_strict_eval():
    with pytest.raises(ConfigError, match="--epochs"):
        make_loaders(make_args(train_data=["iter:a=5"], iterable_dataset=True, epochs=1),
                     sizes_from_path)
    with pytest.raises(ConfigError, match="--strict-eval"):
        make_loaders(make_args(valid_data=["iter:b=5"], iterable_dataset=True, strict_eval=True,
                               split="1"), sizes_from_path)


@pytest.mark.parametrize("overrides,error,words", [
    ({"split": "1,-2,1"}, ConfigError, "--split"),
    ({"train_data": ["a=5", "b=5"], "train_data_weights": [1]}, ConfigError, "1 value"),
    ({"train_data": ["missing/file.bin"]}, DataError, "missing/file.bin"),
    ({"train_data": ["a=0"]}, DataError, "a=0"),
    ({"valid_data": ["b=0"], "split": "1"}, DataError, "--valid-data"),
    ({"train_data": ["a=2"]}, DataError, "path .a=2. has 2 example"),
    ({"train_data": ["a=5", "iter:b=5"], "split": "1"}, ConfigError, "mixes iterable"),
])
def test_bad_input_raises_one_clear_error(overrides, error, words):
    with pytest.raises(error, match=words):
        make_loaders(make_args(**overrides), sizes_from_path)


def test_non_dataset_return_names_function_and_type():
    def create_dataset_function(path, args):
        return {"not": "a dataset"}

    with pytest.raises(HookError, match=r"create_dataset_function.*dict"):
        make_loaders(make_args(), create_dataset_function)


@pytest.mark.parametrize("returned", [object(), (i for i in range(3))])
def test_other_non_datasets_are_hook_errors(returned):
    with pytest.raises(HookError, match="returned"):
        make_loaders(make_args(), lambda path, args: returned)


def test_hugging_face_dataset_works_as_a_source():
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict({"x": list(range(40)), "y": [2 * i for i in range(40)]})
    rows.set_format("torch", columns=["x", "y"])
    args = make_args(split="90,5,5", batch_size=5)
    train, valid, _ = make_loaders(args, lambda path, a: rows)
    batch = next(iter(train))
    assert batch["x"].shape == (5,) and torch.equal(batch["y"], 2 * batch["x"])
    assert len(train.dataset) + len(valid.dataset) < 40


class RecordingArgs(argparse.Namespace):
    """A Namespace that counts how often each attribute is read."""

    def __getattribute__(self, name):
        if not name.startswith("_"):
            reads = object.__getattribute__(self, "__dict__").setdefault("_reads", {})
            reads[name] = reads.get(name, 0) + 1
        return object.__getattribute__(self, name)


def test_the_data_layer_reads_each_setting_once_at_its_boundary():
    from sat_accel.data.settings import DataSettings

    args = RecordingArgs(**vars(make_args(valid_data=["b=20"], epochs=2, strict_eval=True)))
    make_loaders(args, lambda path, a: sizes_from_path(path, a))
    reads = {k: n for k, n in args._reads.items() if k not in ("do_train", "do_valid", "do_test")}
    assert set(reads) <= {f.name for f in dataclasses.fields(DataSettings)} | {"train_iters"}
    assert all(n == 1 for n in reads.values()), reads  # read once, into DataSettings
