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
from .grouping import DEFAULT_WINDOW, LengthGroupedStream, example_lengths, padding_efficiency
from .mixture import MixtureStream, WeightedInterleave, check_weights
from .permutation import derive_seed
from .sampler import ShuffledStream, StreamBatchSampler, StrictEvalBatchSampler
from .settings import DataSettings
from .splits import get_split, should_split, split_dataset

__all__ = ["make_loaders", "train_iters_for_epochs", "RepeatedShards"]

logger = logging.getLogger(__name__)

Loaders = tuple[Optional[DataLoader], Optional[DataLoader], Optional[DataLoader]]


def make_loaders(args: Any, create_dataset_function: Callable, collate_fn: Optional[Callable] = None,
                 length_function: Optional[Callable] = None) -> Loaders:
    """train, valid, test loaders for THIS rank (each may be None).

    The data settings are read from ``args`` once, here (DataSettings); what is decided is written back
    here only, as SAT does: ``args.do_train`` / ``args.do_valid`` / ``args.do_test`` and, with
    ``args.epochs``, ``args.train_iters = ceil(epochs * n_train / (batch_size * world_size * GA))``.
    Calls ``create_dataset_function(path, args)`` once per path. With ``args.group_by_length`` the
    training batches are length-grouped (lengths from ``length_function(example)`` or the examples'
    fields, see grouping.example_lengths) and, unless ``collate_fn`` is given, every loader pads each
    batch to its longest sequence (collate.PadToLongest).
    """
    settings = DataSettings.from_args(args)
    name = getattr(create_dataset_function, "__name__", repr(create_dataset_function))
    train_parts, valid_parts, test_parts = _build_datasets(
        settings, lambda path: create_dataset_function(path, args), name)
    if settings.group_by_length and collate_fn is None:
        collate_fn = PadToLongest()
    train, epoch_length = None, None
    if train_parts:
        train, epoch_length = _train_loader(train_parts, settings, collate_fn, length_function)
    valid = _eval_loader(valid_parts, settings, collate_fn, "valid") if valid_parts else None
    test = _eval_loader(test_parts, settings, collate_fn, "test") if test_parts else None
    args.do_train, args.do_valid, args.do_test = train is not None, valid is not None, test is not None
    if settings.epochs and epoch_length is not None:
        args.train_iters = train_iters_for_epochs(settings.epochs, epoch_length, settings.batch_size,
                                                  settings.world_size, settings.gradient_accumulation_steps)
        logger.info("--epochs %s over %d examples -> train_iters = %d", settings.epochs, epoch_length,
                    args.train_iters)
    return train, valid, test


def train_iters_for_epochs(epochs: float, num_examples: int, batch_size: int, world_size: int,
                           gradient_accumulation_steps: int) -> int:
    """Optimizer steps that cover ``epochs`` passes: ceil(epochs * n / (B * W * GA))."""
    samples_per_step = batch_size * world_size * gradient_accumulation_steps
    return max(1, math.ceil(epochs * num_examples / samples_per_step))


# -- datasets --------------------------------------------------------------------------------

def _build_datasets(settings: DataSettings, create: Callable[[str], Any], name: str) -> tuple[list, list, list]:
    """Lists of dataset parts per split; a list is empty when that split has no data. `create(path)` calls
    the user's create_dataset_function (named `name`) with the path and the user's args."""
    train, valid, test = [], [], []
    if settings.train_data_weights:
        check_weights(settings.train_data_weights, len(settings.train_data))
    if settings.train_data:
        sources = [_create(path, create, name, "--train-data") for path in settings.train_data]
        train, valid, test = _split_sources(sources, settings.train_data, settings)
    if settings.valid_data:
        valid = [_create(path, create, name, "--valid-data") for path in settings.valid_data]
    if settings.test_data:
        test = [_create(path, create, name, "--test-data") for path in settings.test_data]
    return train, valid, test


def _create(path: str, create: Callable[[str], Any], name: str, flag: str) -> Any:
    if not path:
        raise DataError(f"{flag} contains an empty path; give the path of a dataset.")
    try:
        dataset = create(path)
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


def _split_sources(sources: list, paths: Sequence[str], settings: DataSettings) -> tuple[list, list, list]:
    """Split every train source with --split (SAT's order: split each path, then combine)."""
    shares = get_split(settings)
    if _all_iterable(sources, "--train-data"):
        if should_split(shares):
            logger.warning("--split %s is ignored: an iterable dataset cannot be split; give "
                           "--valid-data/--test-data for evaluation.", settings.split)
        return sources, [], []
    if not should_split(shares):
        return sources, [], []
    parts = [split_dataset(ds, shares, settings.block_size, settings.seed, f"--train-data path {path!r}")
             for ds, path in zip(sources, paths)]
    train, valid, test = ([p[i] for p in parts if p[i] is not None] for i in range(3))
    if settings.rank == 0:
        logger.info("--split %s -> train/valid/test examples: %s", settings.split,
                    [sum(len(p) for p in split) for split in (train, valid, test)])
    if not train:
        logger.info("--split %s gives the training share zero: no training data.", settings.split)
    return train, valid, test


# -- loaders ---------------------------------------------------------------------------------

def _loader_kwargs(settings: DataSettings, collate_fn: Optional[Callable]) -> dict:
    # Its own generator: otherwise iter(loader) draws its worker base seed from the global torch RNG,
    # which shifts every later random number (dropout) and breaks bitwise-exact resume.
    generator = torch.Generator().manual_seed(settings.seed)
    kwargs: dict = {"num_workers": settings.num_workers, "collate_fn": collate_fn, "pin_memory": False,
                    "generator": generator}
    if settings.num_workers > 0:
        kwargs["prefetch_factor"] = settings.prefetch_factor or 2
    return kwargs


def _train_loader(parts: list, settings: DataSettings, collate_fn: Optional[Callable],
                  length_function: Optional[Callable] = None) -> tuple[DataLoader, Optional[int]]:
    """The endless training loader and the length of one epoch of its stream (None when iterable)."""
    if _all_iterable(parts, "train"):
        if settings.group_by_length:
            raise ConfigError("--group-by-length sorts windows of a map-style dataset by length; an iterable "
                              "dataset has no index to sort: drop --group-by-length or give a map-style dataset.")
        return _iterable_loader(parts, settings, collate_fn, "train", settings.batch_size), None
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    seed = derive_seed(settings.seed, "train")
    if settings.train_data_weights:
        stream = MixtureStream([len(p) for p in parts], settings.train_data_weights, seed)
    else:
        stream = ShuffledStream(len(dataset), seed)
    epoch_length = stream.epoch_length
    if settings.group_by_length:
        stream = _grouped(stream, dataset, settings, length_function)
    sampler = StreamBatchSampler(stream, settings.batch_size, settings.rank, settings.world_size)
    return DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(settings, collate_fn)), epoch_length


def _grouped(stream: Any, dataset: Any, settings: DataSettings, length_function: Optional[Callable]
             ) -> LengthGroupedStream:
    lengths = example_lengths(dataset, length_function)
    window = settings.group_by_length_window or DEFAULT_WINDOW
    global_batch = settings.batch_size * settings.world_size
    grouped = LengthGroupedStream(stream, lengths, window, global_batch, derive_seed(settings.seed, "train", "group"))
    if settings.rank == 0:
        _report_grouping(stream, grouped, lengths, window, settings.batch_size)
    return grouped


def _report_grouping(plain: Any, grouped: LengthGroupedStream, lengths: Any, window: int, batch_size: int) -> None:
    """Log what grouping saves over the first window; warn when it saves little, as it still makes batches
    homogeneous in whatever goes with length (docs/data.md, "When not to group")."""
    positions = grouped.window_size
    before, after = (padding_efficiency(s, lengths, batch_size, positions) for s in (plain, grouped))
    logger.info("--group-by-length: %d examples, lengths %d..%d (mean %.1f), windows of %d global batches; real "
                "tokens / padded tokens in the first window %.3f ungrouped, %.3f grouped", len(lengths),
                lengths.min(), lengths.max(), lengths.mean(), window, before, after)
    if after - before < 0.1:
        logger.warning("--group-by-length saves little padding on this data (real tokens %.1f%% of the padded "
                       "batch ungrouped, %.1f%% grouped): it buys little speed and still makes every batch one of "
                       "similar lengths, i.e. less mixed; consider dropping --group-by-length.",
                       100 * before, 100 * after)


def _eval_loader(parts: list, settings: DataSettings, collate_fn: Optional[Callable], name: str) -> DataLoader:
    batch_size = settings.eval_batch
    if _all_iterable(parts, name):
        if settings.strict_eval:
            raise ConfigError(f"--strict-eval cannot count the examples of an iterable {name} "
                              "dataset; drop --strict-eval or give a map-style dataset.")
        return _iterable_loader(parts, settings, collate_fn, name, batch_size)
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if settings.strict_eval:
        sampler = StrictEvalBatchSampler(len(dataset), batch_size, settings.rank, settings.world_size)
    else:
        stream = ShuffledStream(len(dataset), derive_seed(settings.seed, name))
        sampler = StreamBatchSampler(stream, batch_size, settings.rank, settings.world_size)
    return DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(settings, collate_fn))


def _iterable_loader(parts: Sequence, settings: DataSettings, collate_fn: Optional[Callable], name: str,
                     batch_size: int) -> DataLoader:
    if name == "train" and settings.epochs:
        raise ConfigError("--epochs needs the dataset length, which an iterable dataset does not "
                          "have; use --train-iters instead.")
    if not settings.iterable_dataset:
        logger.warning("create_dataset_function returned an iterable dataset for the %s data "
                       "without --iterable-dataset; treating it as iterable.", name)
    shards = [RepeatedShards(ds, settings.rank, settings.world_size) for ds in parts]
    weights = settings.train_data_weights if name == "train" else None
    dataset = shards[0] if len(shards) == 1 and not weights else WeightedInterleave(
        shards, weights or [1.0] * len(shards), derive_seed(settings.seed, name, settings.rank))
    return DataLoader(dataset, batch_size=batch_size, **_loader_kwargs(settings, collate_fn))


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
