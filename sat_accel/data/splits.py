"""``--split a,b,c``: parse the shares and cut a dataset into disjoint train/valid/test parts.

Parsing follows SAT (split by ``,`` or ``/``; a sum below 1 gets the remainder appended; pad or
truncate to 3; zero the valid share when --valid-data is given and the test share when
--test-data is given; normalise). Cutting differs on purpose: the dataset is viewed as blocks
of ``block_size`` (capped at the dataset length so small datasets work); a seeded permutation
of the offsets inside a block is divided between the shares, and the same offsets are used in
every block. Unlike SAT, the parts never overlap and every non-zero share gets >= 1 example.
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .permutation import Permutation, derive_seed

__all__ = ["parse_split", "get_split", "should_split", "split_sizes", "BlockSplitDataset",
           "split_dataset"]


def parse_split(text: str, has_valid_data: bool = False,
                has_test_data: bool = False) -> list[float]:
    """Normalised [train, valid, test] shares from a ``--split`` string such as ``"95,5,5"``."""
    parts = [p.strip() for p in re.split(r"[,/]", str(text))]
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--split {text!r} is not a list of numbers; use e.g. --split 98,1,1 "
                          "or --split 0.9/0.05/0.05.") from None
    if any(not math.isfinite(s) or s < 0 for s in shares):
        raise ConfigError(f"--split {text!r} has a negative or non-finite share; use "
                          "non-negative numbers such as --split 98,1,1.")
    if sum(shares) < 1:
        shares.append(1.0 - sum(shares))
    shares = (shares + [0.0, 0.0, 0.0])[:3]
    if has_valid_data:
        shares[1] = 0.0
    if has_test_data:
        shares[2] = 0.0
    total = sum(shares)
    if total <= 0:
        raise ConfigError(f"--split {text!r} leaves no non-zero share (after zeroing the shares "
                          "of --valid-data/--test-data); give the training share a positive value.")
    return [s / total for s in shares]


def get_split(args: Any) -> list[float]:
    """SAT's ``get_split(args)``: shares from args.split, args.valid_data and args.test_data."""
    return parse_split(getattr(args, "split", "1000,1,1"),
                       has_valid_data=bool(getattr(args, "valid_data", None)),
                       has_test_data=bool(getattr(args, "test_data", None)))


def should_split(shares: Sequence[float]) -> bool:
    """True when more than one share is non-zero (SAT's ``should_split``)."""
    return sum(1 for s in shares if s > 0) > 1


def split_sizes(block_size: int, shares: Sequence[float], name: str = "the dataset") -> list[int]:
    """Offsets per share inside one block: sums to ``block_size``; each non-zero share >= 1.

    Largest-remainder rounding, then shares rounded to 0 take one offset from the largest.
    """
    nonzero = [i for i, s in enumerate(shares) if s > 0]
    if block_size < len(nonzero):
        raise DataError(f"{name} has {block_size} example(s), too few for {len(nonzero)} "
                        "non-empty splits; use --split 1 or give --valid-data/--test-data.")
    exact = [block_size * s / sum(shares) for s in shares]
    sizes = [int(math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: block_size - sum(sizes)]:
        sizes[i] += 1
    for i in nonzero:
        if sizes[i] == 0:
            sizes[max(range(len(sizes)), key=lambda j: sizes[j])] -= 1
            sizes[i] = 1
    return sizes


class BlockSplitDataset:
    """The part of ``dataset`` whose index modulo ``block_size`` is one of ``offsets``."""

    def __init__(self, dataset: Any, offsets: np.ndarray, block_size: int) -> None:
        self.dataset = dataset
        self.offsets = np.sort(np.asarray(offsets, dtype=np.int64))
        self.block_size = int(block_size)
        full_blocks, tail = divmod(len(dataset), self.block_size)
        # The tail block is partial: only offsets below its length exist there.
        self._length = len(self.offsets) * full_blocks + int(np.sum(self.offsets < tail))

    def __len__(self) -> int:
        return self._length

    def source_index(self, index: int) -> int:
        """Index into the underlying dataset."""
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} is outside a split of length {self._length}.")
        index %= self._length
        block, j = divmod(index, len(self.offsets))
        return block * self.block_size + int(self.offsets[j])

    def source_indices(self, indices: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`source_index` for an int64 array of indices in ``[0, len(self))``."""
        block, j = np.divmod(np.asarray(indices, dtype=np.int64), len(self.offsets))
        return block * self.block_size + self.offsets[j]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.source_index(int(index))]


def split_dataset(dataset: Any, shares: Sequence[float], block_size: int, seed: int,
                  name: str = "the dataset") -> list[Optional[BlockSplitDataset]]:
    """Disjoint [train, valid, test] parts of ``dataset`` (None for a zero share); ``name``
    describes the dataset in error messages."""
    n = len(dataset)
    if block_size < 1:
        raise ConfigError(f"--block-size must be >= 1, got {block_size}.")
    block = min(int(block_size), n)
    sizes = split_sizes(block, shares, name)
    order = Permutation(block, derive_seed(seed, "split"))(np.arange(block, dtype=np.int64))
    parts: list[Optional[BlockSplitDataset]] = []
    start = 0
    for size in sizes:
        parts.append(BlockSplitDataset(dataset, order[start:start + size], block) if size else None)
        start += size
    return parts
