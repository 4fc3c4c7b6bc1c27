"""Weighted mixtures of several datasets (``--train-data-weights``) with O(1) state.

Weights follow SAT's map-style meaning: weight w_i replicates source i, so its virtual size is
``c_i = round(w_i * len_i)`` (>= 1 when w_i > 0) and its share of the stream is
``c_i / sum_j c_j``. Weights 1,1 give a plain concatenation; weight 2 shows each example of that
source twice as often as weight 1 does. (To get fixed proportions p_i regardless of dataset
sizes, pass w_i = p_i / len_i times any constant.)

The stream is cut into "mixture epochs" of ``C = sum c_i`` positions. Inside mixture epoch j,
position p goes to slot ``q = Permutation(C, seed_j)(p mod C)``; slots ``[cum_i, cum_i + c_i)``
belong to source i, so the source of every position is a pure function of (seed, position)
and each mixture epoch holds exactly c_i examples of source i. Source i's own examples come
from its own shuffled stream at local position ``j * c_i + (q - cum_i)``: over w_i of its
epochs per mixture epoch, each example exactly once per source epoch.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ConfigError
from .permutation import Permutation, derive_seed
from .sampler import ShuffledStream

__all__ = ["check_weights", "mixture_counts", "MixtureStream", "WeightedInterleave"]

_MASK64 = (1 << 64) - 1


def check_weights(weights: Sequence[float], num_paths: int) -> list[float]:
    """Validated ``--train-data-weights``: one finite, non-negative number per path."""
    if len(weights) != num_paths:
        raise ConfigError(f"--train-data-weights has {len(weights)} value(s) for {num_paths} "
                          "--train-data path(s); give one weight per path.")
    out = []
    for weight in weights:
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--train-data-weights value {weight!r} is not a finite non-negative "
                              "number; use e.g. --train-data-weights 1 2.")
        out.append(value)
    return out


def mixture_counts(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Virtual size per source: ``round(w_i * len_i)``, at least 1 for a positive weight."""
    counts = []
    for size, weight in zip(sizes, check_weights(weights, len(sizes))):
        counts.append(max(1, round(weight * size)) if weight > 0 and size > 0 else 0)
    if sum(counts) == 0:
        raise ConfigError(f"--train-data-weights {list(weights)} give every non-empty dataset "
                          "weight zero; give at least one positive weight.")
    return counts


class MixtureStream:
    """Endless stream over the concatenation of sources, mixed by weight (see module doc).

    ``indices`` returns indices into ``torch.utils.data.ConcatDataset(sources)``.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int) -> None:
        self.sizes = [int(s) for s in sizes]
        self.counts = mixture_counts(self.sizes, weights)
        self.seed = int(seed)
        self.epoch_length = sum(self.counts)
        self._slot_start = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._streams = [ShuffledStream(size, derive_seed(self.seed, "source", i)) if size else None
                         for i, size in enumerate(self.sizes)]
        self._chunk_perm: tuple[int, Permutation] | None = None

    def _chunk_permutation(self, chunk: int) -> Permutation:
        if self._chunk_perm is None or self._chunk_perm[0] != chunk:
            perm = Permutation(self.epoch_length, derive_seed(self.seed, "mixture", chunk))
            self._chunk_perm = (chunk, perm)
        return self._chunk_perm[1]

    def sources(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source id, position in that source's own stream) for each global position."""
        positions = np.asarray(positions, dtype=np.int64)
        chunks, offsets = np.divmod(positions, self.epoch_length)
        slots = np.empty_like(positions)
        for chunk in np.unique(chunks).tolist():
            mask = chunks == chunk
            slots[mask] = self._chunk_permutation(chunk)(offsets[mask])
        source = np.searchsorted(self._slot_start, slots, side="right") - 1
        counts = np.asarray(self.counts, dtype=np.int64)
        local = chunks * counts[source] + (slots - self._slot_start[source])
        return source, local

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Indices into the concatenated sources for ``positions`` (int64 array)."""
        positions = np.asarray(positions, dtype=np.int64)
        source, local = self.sources(positions)
        out = np.empty_like(positions)
        for i in np.unique(source).tolist():
            mask = source == i
            out[mask] = self._offsets[i] + self._streams[i].indices(local[mask])
        return out


def _unit_interval(key: int, k: int) -> float:
    """A uniform float in [0, 1) that is a fixed hash of (key, k) (splitmix64 finaliser)."""
    z = (key + (k + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


class WeightedInterleave(IterableDataset):
    """Interleave iterable sources; item k of a worker comes from source i with probability
    ``w_i / sum(w)``, chosen by a fixed hash of (seed, worker, k). A source that runs out is
    dropped and the others are renormalised (SAT's AlterDataset behaviour)."""

    def __init__(self, sources: Sequence[Any], weights: Sequence[float], seed: int) -> None:
        self.sources = list(sources)
        self.weights = check_weights(weights, len(self.sources))
        if sum(self.weights) <= 0:
            raise ConfigError(f"--train-data-weights {list(weights)} are all zero; give at least "
                              "one positive weight.")
        self.seed = int(seed)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        key = derive_seed(self.seed, "worker", info.id if info is not None else 0)
        live = [(w, iter(s)) for w, s in zip(self.weights, self.sources) if w > 0]
        k = 0
        while live:
            cumulative = list(np.cumsum([w for w, _ in live]))
            choice = bisect.bisect_right(cumulative, _unit_interval(key, k) * cumulative[-1])
            choice = min(choice, len(live) - 1)
            k += 1
            try:
                yield next(live[choice][1])
            except StopIteration:
                del live[choice]
