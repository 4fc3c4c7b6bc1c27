"""``make_loaders``: datasets from paths -> splits -> mixtures -> per-rank DataLoaders.

Map-style data goes through the index-free samplers (sampler.py): the train loader and the
non-strict eval loaders are endless shuffled streams whose state is one integer; strict eval
visits every example once across ranks. Iterable datasets are sharded by rank and DataLoader
worker and repeated endlessly; their resume is approximate (see docs/data.md).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import ConcatDataset, DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError, DataError, HookError
from .collate import PadToLongest
from .grouping import DEFAULT_WINDOW, LengthGroupedStream, example_lengths
from .mixture import MixtureStream, WeightedInterleave, check_weights
from .permutation import derive_seed
from .sampler import ShuffledStream, StreamBatchSampler, StrictEvalBatchSampler
from .splits import get_split, should_split, split_dataset

__all__ = ["make_loaders", "train_iters_for_epochs", "RepeatedShards"]

logger = logging.getLogger(__name__)

Loaders = tuple[Optional[DataLoader], Optional[DataLoader], Optional[DataLoader]]


def make_loaders(args: Any, create_dataset_function: Callable, collate_fn: Optional[Callable] = None,
                 length_function: Optional[Callable] = None) -> Loaders:
    """train, valid, test loaders for THIS rank (each may be None).

    Sets ``args.do_train`` / ``args.do_valid`` / ``args.do_test``. If ``args.epochs`` is set,
    sets ``args.train_iters = ceil(epochs * n_train / (batch_size * world_size * GA))``.
    Calls ``create_dataset_function(path, args)`` once per path. With ``args.group_by_length`` the
    training batches are length-grouped (lengths from ``length_function(example)`` or the examples'
    fields, see grouping.example_lengths) and, unless ``collate_fn`` is given, every loader pads each
    batch to its longest sequence (collate.PadToLongest).
    """
    train_parts, valid_parts, test_parts = _build_datasets(args, create_dataset_function)
    if getattr(args, "group_by_length", False) and collate_fn is None:
        collate_fn = PadToLongest()
    train = _train_loader(train_parts, args, collate_fn, length_function) if train_parts else None
    valid = _eval_loader(valid_parts, args, collate_fn, "valid") if valid_parts else None
    test = _eval_loader(test_parts, args, collate_fn, "test") if test_parts else None
    args.do_train = train is not None
    args.do_valid = valid is not None
    args.do_test = test is not None
    return train, valid, test


def train_iters_for_epochs(epochs: float, num_examples: int, batch_size: int, world_size: int,
                           gradient_accumulation_steps: int) -> int:
    """Optimizer steps that cover ``epochs`` passes: ceil(epochs * n / (B * W * GA))."""
    samples_per_step = batch_size * world_size * gradient_accumulation_steps
    return max(1, math.ceil(epochs * num_examples / samples_per_step))


# -- datasets --------------------------------------------------------------------------------

def _build_datasets(args: Any, create_fn: Callable) -> tuple[list, list, list]:
    """Lists of dataset parts per split; a list is empty when that split has no data."""
    train, valid, test = [], [], []
    weights = getattr(args, "train_data_weights", None)
    if weights:
        check_weights(weights, len(getattr(args, "train_data", None) or []))
    if getattr(args, "train_data", None):
        sources = [_create(path, args, create_fn, "--train-data") for path in args.train_data]
        train, valid, test = _split_sources(sources, args.train_data, args)
    if getattr(args, "valid_data", None):
        valid = [_create(path, args, create_fn, "--valid-data") for path in args.valid_data]
    if getattr(args, "test_data", None):
        test = [_create(path, args, create_fn, "--test-data") for path in args.test_data]
    return train, valid, test


def _create(path: str, args: Any, create_fn: Callable, flag: str) -> Any:
    name = getattr(create_fn, "__name__", repr(create_fn))
    if not path:
        raise DataError(f"{flag} contains an empty path; give the path of a dataset.")
    try:
        dataset = create_fn(path, args)
    except FileNotFoundError as exc:
        raise DataError(f"{flag} path {path!r} was not found ({name} raised: {exc}); check the "
                        "path.") from exc
    if _is_iterable(dataset):
        if iter(dataset) is dataset:  # a generator or iterator can be read only once
            raise HookError(f"{name}({path!r}, args) returned a one-shot iterator "
                            f"({type(dataset).__name__}); return a torch IterableDataset instead.")
        return dataset
    if isinstance(dataset, (Mapping, str, bytes)) or not (
            hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise HookError(f"{name}({path!r}, args) returned {type(dataset).__name__}, not a "
                        "dataset; return a torch Dataset (with __len__ and __getitem__) or an "
                        "IterableDataset.")
    if len(dataset) == 0:
        raise DataError(f"{flag} path {path!r} gave an empty dataset (length 0); check the path "
                        f"and what {name} returns.")
    return dataset


def _is_iterable(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset) or (
        hasattr(dataset, "__iter__") and not hasattr(dataset, "__getitem__"))


def _all_iterable(parts: Sequence, name: str) -> bool:
    """True if every part is iterable, False if none is; a mix cannot be sampled together."""
    kinds = {_is_iterable(ds) for ds in parts}
    if len(kinds) > 1:
        raise ConfigError(f"the {name} data mixes iterable and map-style datasets; make "
                          "create_dataset_function return the same kind for every path.")
    return kinds == {True}


def _split_sources(sources: list, paths: Sequence[str], args: Any) -> tuple[list, list, list]:
    """Split every train source with --split (SAT's order: split each path, then combine)."""
    if _all_iterable(sources, "--train-data"):
        shares = get_split(args)
        if should_split(shares):
            logger.warning("--split %s is ignored: an iterable dataset cannot be split; give "
                           "--valid-data/--test-data for evaluation.", args.split)
        return sources, [], []
    shares = get_split(args)
    if not should_split(shares):
        return sources, [], []
    parts = [split_dataset(ds, shares, args.block_size, args.seed, f"--train-data path {path!r}")
             for ds, path in zip(sources, paths)]
    train, valid, test = ([p[i] for p in parts if p[i] is not None] for i in range(3))
    if _rank_layout(args)[0] == 0:
        logger.info("--split %s -> train/valid/test examples: %s", args.split,
                    [sum(len(p) for p in split) for split in (train, valid, test)])
    if not train:
        logger.info("--split %s gives the training share zero: no training data.", args.split)
    return train, valid, test


# -- loaders ---------------------------------------------------------------------------------

def _loader_kwargs(args: Any, collate_fn: Optional[Callable]) -> dict:
    workers = int(getattr(args, "num_workers", 0) or 0)
    # Its own generator: otherwise iter(loader) draws its worker base seed from the global torch RNG,
    # which shifts every later random number (dropout) and breaks bitwise-exact resume.
    generator = torch.Generator().manual_seed(int(getattr(args, "seed", 0) or 0))
    kwargs: dict = {"num_workers": workers, "collate_fn": collate_fn, "pin_memory": False, "generator": generator}
    if workers > 0:
        kwargs["prefetch_factor"] = getattr(args, "prefetch_factor", None) or 2
    return kwargs


def _rank_layout(args: Any) -> tuple[int, int]:
    return int(getattr(args, "rank", 0) or 0), int(getattr(args, "world_size", 1) or 1)


def _train_loader(parts: list, args: Any, collate_fn: Optional[Callable],
                  length_function: Optional[Callable] = None) -> DataLoader:
    rank, world = _rank_layout(args)
    if _all_iterable(parts, "train"):
        if getattr(args, "group_by_length", False):
            raise ConfigError("--group-by-length sorts windows of a map-style dataset by length; an iterable "
                              "dataset has no index to sort: drop --group-by-length or give a map-style dataset.")
        return _iterable_loader(parts, args, collate_fn, "train", args.batch_size)
    weights = getattr(args, "train_data_weights", None)
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    seed = derive_seed(args.seed, "train")
    if weights:
        stream = MixtureStream([len(p) for p in parts], weights, seed)
    else:
        stream = ShuffledStream(len(dataset), seed)
    if getattr(args, "epochs", None):
        args.train_iters = train_iters_for_epochs(args.epochs, stream.epoch_length, args.batch_size,
                                                  world, args.gradient_accumulation_steps)
        logger.info("--epochs %s over %d examples -> train_iters = %d", args.epochs,
                    stream.epoch_length, args.train_iters)
    if getattr(args, "group_by_length", False):
        stream = _grouped(stream, dataset, args, world, length_function)
    sampler = StreamBatchSampler(stream, args.batch_size, rank, world)
    return DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(args, collate_fn))


def _grouped(stream: Any, dataset: Any, args: Any, world: int, length_function: Optional[Callable]
             ) -> LengthGroupedStream:
    lengths = example_lengths(dataset, length_function)
    window = getattr(args, "group_by_length_window", None) or DEFAULT_WINDOW
    if _rank_layout(args)[0] == 0:
        logger.info("--group-by-length: %d examples, lengths %d..%d (mean %.1f), windows of %d global batches",
                    len(lengths), lengths.min(), lengths.max(), lengths.mean(), window)
    return LengthGroupedStream(stream, lengths, window, args.batch_size * world,
                               derive_seed(args.seed, "train", "group"))


def _eval_loader(parts: list, args: Any, collate_fn: Optional[Callable], name: str) -> DataLoader:
    batch_size = getattr(args, "eval_batch_size", None) or args.batch_size
    rank, world = _rank_layout(args)
    if _all_iterable(parts, name):
        if getattr(args, "strict_eval", False):
            raise ConfigError(f"--strict-eval cannot count the examples of an iterable {name} "
                              "dataset; drop --strict-eval or give a map-style dataset.")
        return _iterable_loader(parts, args, collate_fn, name, batch_size)
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if getattr(args, "strict_eval", False):
        sampler = StrictEvalBatchSampler(len(dataset), batch_size, rank, world)
    else:
        stream = ShuffledStream(len(dataset), derive_seed(args.seed, name))
        sampler = StreamBatchSampler(stream, batch_size, rank, world)
    return DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(args, collate_fn))


def _iterable_loader(parts: Sequence, args: Any, collate_fn: Optional[Callable], name: str,
                     batch_size: int) -> DataLoader:
    if name == "train" and getattr(args, "epochs", None):
        raise ConfigError("--epochs needs the dataset length, which an iterable dataset does not "
                          "have; use --train-iters instead.")
    if not getattr(args, "iterable_dataset", False):
        logger.warning("create_dataset_function returned an iterable dataset for the %s data "
                       "without --iterable-dataset; treating it as iterable.", name)
    rank, world = _rank_layout(args)
    shards = [RepeatedShards(ds, rank, world) for ds in parts]
    weights = getattr(args, "train_data_weights", None) if name == "train" else None
    dataset = shards[0] if len(shards) == 1 and not weights else WeightedInterleave(
        shards, weights or [1.0] * len(shards), derive_seed(args.seed, name, rank))
    return DataLoader(dataset, batch_size=batch_size, **_loader_kwargs(args, collate_fn))


class RepeatedShards(IterableDataset):
    """This rank's and this DataLoader worker's share of an iterable dataset, repeated endlessly.

    Item i of each pass goes to shard ``i % (world_size * num_workers)``; a dataset whose
    ``shards_itself`` attribute is true is passed through unsharded (it reads the rank from
    ``args`` and the worker from ``torch.utils.data.get_worker_info()``). Before pass e the
    dataset's ``set_epoch(e)`` is called if it has one.
    """

    def __init__(self, dataset: Any, rank: int, world_size: int) -> None:
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size

    def _shard(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[Any]:
        shard, num_shards = self._shard()
        if getattr(self.dataset, "shards_itself", False):
            shard, num_shards = 0, 1
        epoch = 0
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            total, mine = 0, 0
            for i, item in enumerate(self.dataset):
                total += 1
                if i % num_shards == shard:
                    mine += 1
                    yield item
            if total == 0:
                raise DataError(f"iterable dataset {type(self.dataset).__name__} yielded no "
                                "items; check what create_dataset_function returns.")
            if mine == 0:
                return  # fewer items than shards: this shard stays empty
            epoch += 1
