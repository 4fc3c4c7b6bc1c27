"""Index-free samplers: a global, endless, shuffled sample stream cut into per-rank micro-batches.

The *stream* maps a global position ``p = 0, 1, 2, ...`` to a dataset index. For a dataset of n
examples, epoch ``e = p // n`` is the exact permutation ``Permutation(n, derive_seed(seed, e))``
evaluated at ``p % n``: every example once per epoch, a fresh order per epoch, epochs chained
forever, nothing of size n stored.

Global micro-batch k is positions ``[k*B*W, (k+1)*B*W)``; rank r takes ``[k*B*W + r*B, k*B*W +
(r+1)*B)``. The order therefore depends on (seed, n) only, and 1 rank x 2B sees the same data as
2 ranks x B. The whole state is one integer: how many stream positions were handed out.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator, Protocol

import numpy as np

from .permutation import Permutation, derive_seed

__all__ = ["IndexStream", "ShuffledStream", "StreamBatchSampler", "StrictEvalBatchSampler"]

# How many indices to compute per vectorised call inside a sampler (amortises numpy overhead).
_CHUNK_INDICES = 8192


class IndexStream(Protocol):
    """Anything that maps global stream positions to dataset indices."""

    epoch_length: int

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Dataset indices (int64) for an array of non-negative int64 stream positions."""


class ShuffledStream:
    """Endless stream over ``range(n)``: a new exact permutation per epoch (see module doc)."""

    def __init__(self, n: int, seed: int, cache_size: int = 8) -> None:
        if n < 1:
            raise ValueError(f"ShuffledStream needs at least one example, got n={n}.")
        self.epoch_length = int(n)
        self.seed = int(seed)
        self._cache: OrderedDict[int, Permutation] = OrderedDict()
        self._cache_size = cache_size

    def permutation(self, epoch: int) -> Permutation:
        """The permutation used in ``epoch`` (cached: consecutive batches reuse it)."""
        perm = self._cache.get(epoch)
        if perm is None:
            perm = Permutation(self.epoch_length, derive_seed(self.seed, "epoch", epoch))
            self._cache[epoch] = perm
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(epoch)
        return perm

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Dataset indices for ``positions`` (int64 array, any shape)."""
        positions = np.asarray(positions, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.epoch_length)
        if positions.size == 0:
            return positions.copy()
        first, last = int(epochs.min()), int(epochs.max())
        if first == last:  # the usual case: a batch inside one epoch
            return self.permutation(first)(offsets)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs).tolist():
            mask = epochs == epoch
            out[mask] = self.permutation(epoch)(offsets[mask])
        return out


def _check_layout(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, "
                         f"world_size={world_size}.")


class StreamBatchSampler:
    """Infinite per-rank batch sampler over an :class:`IndexStream` (use as ``batch_sampler=``).

    State: ``consumed_samples`` = global stream positions handed out so far (a multiple of
    ``global_batch_size`` in normal use). ``state_dict()`` returns ``{"consumed_samples": int}``;
    ``load_state_dict``/``set_consumed_samples`` set where the NEXT ``iter()`` starts. DataLoader
    workers prefetch, so this counter can run ahead of what the training loop used: for exact
    resume, set it from the number of micro-batches the loop pulled times ``global_batch_size``.
    """

    def __init__(self, stream: IndexStream, batch_size: int, rank: int = 0, world_size: int = 1,
                 consumed_samples: int = 0) -> None:
        _check_layout(batch_size, rank, world_size)
        self.stream = stream
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.set_consumed_samples(consumed_samples)

    @property
    def global_batch_size(self) -> int:
        """Samples per global micro-batch: batch_size * world_size."""
        return self.batch_size * self.world_size

    @property
    def consumed_samples(self) -> int:
        """Global stream positions handed out so far (where the next ``iter()`` starts)."""
        return self._consumed

    def set_consumed_samples(self, consumed_samples: int) -> None:
        """Make the next ``iter()`` start at global stream position ``consumed_samples``."""
        if isinstance(consumed_samples, bool) or int(consumed_samples) != consumed_samples \
                or consumed_samples < 0:
            raise ValueError("consumed_samples must be a non-negative integer, got "
                             f"{consumed_samples!r}.")
        self._consumed = int(consumed_samples)

    def state_dict(self) -> dict:
        """``{"consumed_samples": int}`` — the sampler's whole state."""
        return {"consumed_samples": self._consumed}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` output."""
        self.set_consumed_samples(state["consumed_samples"])

    def batch_positions(self, start: int, num_batches: int = 1) -> np.ndarray:
        """Stream positions of this rank's next ``num_batches`` batches when the global stream is
        at ``start``: shape (num_batches, batch_size)."""
        rows = np.arange(num_batches, dtype=np.int64)[:, None] * self.global_batch_size
        cols = np.arange(self.batch_size, dtype=np.int64)[None, :]
        return start + self.rank * self.batch_size + rows + cols

    def __iter__(self) -> Iterator[list[int]]:
        # The start is read now (at iter() time), not at the first next().
        return self._generate(self._consumed)

    def _generate(self, start: int) -> Iterator[list[int]]:
        # Enough batches to amortise numpy overhead, but not more than about one epoch, so that
        # small datasets (many epochs per chunk) and frequent restarts stay cheap.
        per_epoch = self.stream.epoch_length // self.global_batch_size
        per_chunk = max(1, min(_CHUNK_INDICES // self.batch_size, per_epoch))
        while True:
            indices = self.stream.indices(self.batch_positions(start, per_chunk)).tolist()
            for row in indices:
                start += self.global_batch_size
                self._consumed = start
                yield row


class StrictEvalBatchSampler:
    """Finite per-rank batch sampler that visits every example exactly once across ranks.

    Every rank yields ``ceil(N / (B*W))`` batches (so collectives line up). In the last global batch
    a rank's batch holds only its real examples (it may be shorter than B), so the loss of a short
    batch is not diluted by duplicates; a rank with no real example left gets one padding example
    (a repeat) whose :meth:`real_size` is 0, so it still runs the step but counts for nothing.
    """

    def __init__(self, num_examples: int, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> None:
        _check_layout(batch_size, rank, world_size)
        if num_examples < 1:
            raise ValueError("StrictEvalBatchSampler needs at least one example, got "
                             f"{num_examples}.")
        self.num_examples = int(num_examples)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)

    @property
    def global_batch_size(self) -> int:
        """Samples per global micro-batch: batch_size * world_size."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.global_batch_size)

    def real_size(self, k: int) -> int:
        """Number of real (non-padding) examples in this rank's k-th batch (0..batch_size)."""
        if not 0 <= k < len(self):
            raise IndexError(f"batch {k} is outside [0, {len(self)}).")
        start = k * self.global_batch_size + self.rank * self.batch_size
        return max(0, min(self.batch_size, self.num_examples - start))

    def __iter__(self) -> Iterator[list[int]]:
        base = self.rank * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        for k in range(len(self)):
            positions = k * self.global_batch_size + base
            real = positions[positions < self.num_examples]
            yield real.tolist() if len(real) else [int(positions[0] % self.num_examples)]
