"""``--group-by-length``: length-grouped global batches over the index-free stream, with O(1) state.

:class:`LengthGroupedStream` wraps any :class:`~sat_accel.data.sampler.IndexStream` (shuffled or mixture)
and only *reorders positions inside windows*, so every guarantee of the stream survives:

* Each epoch of the base stream (positions ``[e*n, (e+1)*n)``) is cut into windows of ``S = window x G``
  positions (G = global micro-batch = batch size x processes; the last window of an epoch is shorter).
  A window never crosses an epoch boundary, so every example is still seen exactly once per epoch.
* Inside a window the examples are sorted by length (longest first, ties by stream position), and the
  sorted run is cut into the window's global batches, which are then visited in a seeded random order
  (no short-to-long curriculum inside a window). Global batches are cut on the absolute grid of
  multiples of G, the same grid the sampler uses, so each global batch holds examples of similar length,
  and so does every rank's slice of it.
* The order is a pure function of (seed, n, window, G, lengths): no state beyond the sampler's
  ``consumed_samples``, exact resume, and 1 process x batch 2B sees exactly what 2 processes x B see.

Lengths come from :func:`example_lengths` (docs/data.md, "Length-grouped batches").
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import DataError, HookError
from .permutation import Permutation, derive_seed
from .sampler import IndexStream

__all__ = ["LengthGroupedStream", "example_lengths", "padding_efficiency", "DEFAULT_WINDOW"]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 50  # global batches per window (HF Trainer's megabatch is 50 batches too)
LENGTH_COLUMN = "length"


class LengthGroupedStream:
    """An :class:`IndexStream` whose windows of ``window x global_batch_size`` positions are sorted by
    ``lengths[index]`` and cut into global batches visited in a seeded order (see the module doc)."""

    def __init__(self, base: IndexStream, lengths: np.ndarray, window: int, global_batch_size: int,
                 seed: int, cache_size: int = 4) -> None:
        if window < 1 or global_batch_size < 1:
            raise ValueError(f"window and global_batch_size must be >= 1, got {window}, {global_batch_size}.")
        self.base = base
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.epoch_length = base.epoch_length
        self.global_batch_size = int(global_batch_size)
        self.window_size = int(window) * self.global_batch_size
        self.seed = int(seed)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def window_bounds(self, epoch: int, window: int) -> tuple[int, int]:
        """Absolute stream positions ``[start, end)`` of ``window`` in ``epoch``."""
        start = epoch * self.epoch_length + window * self.window_size
        return start, min(start + self.window_size, (epoch + 1) * self.epoch_length)

    def window_indices(self, epoch: int, window: int) -> np.ndarray:
        """Dataset indices of the window's positions, in stream order (cached)."""
        key = (epoch, window)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        start, end = self.window_bounds(epoch, window)
        base = self.base.indices(np.arange(start, end, dtype=np.int64))
        by_length = base[np.argsort(-self.lengths[base], kind="stable")]
        # Slots: the window's pieces of the global-batch grid (first and last may be partial).
        cuts = np.unique(np.concatenate([[start, end], np.arange(
            -(-start // self.global_batch_size) * self.global_batch_size, end, self.global_batch_size)]))
        slots = np.stack([cuts[:-1], cuts[1:]], axis=1) - start
        order = Permutation(len(slots), derive_seed(self.seed, "group", epoch, window))(
            np.arange(len(slots), dtype=np.int64))
        targets = np.concatenate([np.arange(a, b) for a, b in slots[order]])
        out = np.empty_like(base)
        out[targets] = by_length
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Dataset indices for ``positions`` (int64 array, any shape)."""
        positions = np.asarray(positions, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.epoch_length)
        windows = offsets // self.window_size
        out = np.empty_like(positions)
        keys = np.stack([epochs.ravel(), windows.ravel()], axis=1)
        for epoch, window in np.unique(keys, axis=0).tolist():
            mask = (epochs == epoch) & (windows == window)
            start, _ = self.window_bounds(epoch, window)
            out[mask] = self.window_indices(epoch, window)[positions[mask] - start]
        return out


def padding_efficiency(stream: IndexStream, lengths: np.ndarray, batch_size: int, positions: int) -> float:
    """Real tokens / padded tokens over the stream's first ``positions`` positions cut into batches of
    ``batch_size`` (each padded to its longest example)."""
    count = min(positions, stream.epoch_length) // batch_size * batch_size
    batches = lengths[stream.indices(np.arange(count, dtype=np.int64))].reshape(-1, batch_size)
    padded = batches.max(axis=1).sum() * batch_size
    return float(batches.sum() / padded) if padded else 1.0


# ---------------------------------------------------------------- lengths
def example_lengths(dataset: Any, length_function: Optional[Callable[[Any], int]] = None) -> np.ndarray:
    """One length (tokens) per example of a map-style dataset, as int64.

    In order: ``length_function(example)`` for every example when given; a Hugging Face dataset's
    ``length`` column, else the real tokens of its ``attention_mask`` column (ones), else the length of
    its ``input_ids`` column; for any other dataset the same keys of every example dict. Splits and
    concatenations are looked through, so a Hugging Face column is read once, in Arrow.
    """
    if length_function is None:
        fast = _columnar_lengths(dataset)
        if fast is not None:
            return fast
    return np.fromiter((_one_length(dataset[i], length_function, i) for i in range(len(dataset))),
                       dtype=np.int64, count=len(dataset))


def _columnar_lengths(dataset: Any) -> Optional[np.ndarray]:
    """Lengths without loading examples one by one, where the dataset's structure allows it."""
    from torch.utils.data import ConcatDataset, Subset

    from .splits import BlockSplitDataset

    if isinstance(dataset, ConcatDataset):
        parts = [_columnar_lengths(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    if isinstance(dataset, (BlockSplitDataset, Subset)):
        inner = _columnar_lengths(dataset.dataset)
        if inner is None:
            return None
        if isinstance(dataset, Subset):
            return inner[np.asarray(dataset.indices, dtype=np.int64)]
        return inner[dataset.source_indices(np.arange(len(dataset), dtype=np.int64))]
    names = getattr(dataset, "column_names", None)
    if not isinstance(names, list):
        return None
    return _hf_column_lengths(dataset, names)


def _hf_column_lengths(dataset: Any, names: list) -> Optional[np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    def column(name: str):
        table = dataset.with_format(None).select_columns([name]).data.table
        return table.column(name).combine_chunks()

    if LENGTH_COLUMN in names:
        return np.asarray(column(LENGTH_COLUMN).to_numpy(zero_copy_only=False), dtype=np.int64)
    for name in ("attention_mask", "input_ids"):
        if name not in names:
            continue
        values = column(name)
        if not pa.types.is_list(values.type) and not pa.types.is_large_list(values.type):
            return None
        if name == "input_ids":
            return np.asarray(pc.list_value_length(values).to_numpy(zero_copy_only=False), dtype=np.int64)
        flat = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False), dtype=np.int64)
        offsets = np.asarray(values.offsets.to_numpy(), dtype=np.int64)
        sums = np.concatenate([[0], np.cumsum(flat != 0)])
        return sums[offsets[1:]] - sums[offsets[:-1]]
    return None


def _one_length(example: Any, length_function: Optional[Callable], index: int) -> int:
    if length_function is not None:
        value = length_function(example)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            name = getattr(length_function, "__name__", repr(length_function))
            raise HookError(f"length_function {name} returned {value!r} for example {index}; it must return "
                            "the example's length as a non-negative int.")
        return int(value)
    if isinstance(example, Mapping):
        if LENGTH_COLUMN in example:
            return int(example[LENGTH_COLUMN])
        if "attention_mask" in example:
            return int(np.count_nonzero(np.asarray(_as_array(example["attention_mask"]))))
        if "input_ids" in example:
            return len(example["input_ids"])
    raise DataError(f"--group-by-length cannot tell the length of example {index} ({type(example).__name__}); "
                    "give the examples a 'length', 'attention_mask' or 'input_ids' field, or pass "
                    "training_main(..., length_function=fn) with fn(example) -> int.")


def _as_array(value: Any) -> Any:
    return value.numpy() if isinstance(value, torch.Tensor) else value
