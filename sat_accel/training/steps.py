"""The pieces of one step: batches moved to the device and counted (CountingIterator), the user's
forward_step called and its result checked (one clear error per misuse), scalar sums kept on the device
until a report is due (ScalarAverager)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from accelerate.utils import send_to_device

from ..errors import HookError

NO_VALUE = -100  # SAT's "no value on this rank" sentinel for metrics


class CountingIterator:
    """Wraps a loader iterator: moves each batch to the device and counts what the loop pulled.

    ``samples`` = the global stream position after the last batch pulled (``start_samples`` + batches x
    ``samples_per_batch``, the global micro-batch): the data position saved for exact resume (DataLoader
    workers prefetch ahead, so the sampler's own position is not the truth). It also counts tokens for the
    tokens/s figure.
    """

    def __init__(self, iterator: Iterator, device: torch.device, samples_per_batch: int = 0,
                 start_samples: int = 0):
        self.iterator = iterator
        self.device = device
        self.samples_per_batch = samples_per_batch
        self.samples = start_samples
        self.tokens = 0

    def __iter__(self) -> "CountingIterator":
        return self

    def __next__(self) -> Any:
        batch = next(self.iterator)
        self.samples += self.samples_per_batch
        if isinstance(batch, dict):
            self.tokens += count_tokens(batch)
        return send_to_device(batch, self.device, non_blocking=True)


def count_tokens(batch: dict) -> int:
    """Real tokens of a dict batch: the attention mask's ones when there is one (padding excluded), else
    the size of `input_ids`; 0 when neither is there. Counted before the batch moves to the device, so it
    costs no device sync."""
    mask, ids = batch.get("attention_mask"), batch.get("input_ids")
    if isinstance(mask, torch.Tensor) and isinstance(ids, torch.Tensor) and mask.shape == ids.shape:
        return int(mask.sum())
    return ids.numel() if isinstance(ids, torch.Tensor) else 0


def _function_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))


def call_forward_step(forward_step: Callable, data_iterator, model, args, timers,
                      training: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the user's forward_step and normalise its result to (scalar loss, {name: tensor})."""
    result = forward_step(data_iterator, model, args, timers)
    name = _function_name(forward_step)
    if isinstance(result, (tuple, list)):
        if len(result) != 2 or not isinstance(result[1], dict):
            raise HookError(f"{name} must return a loss tensor or (loss, dict of metric tensors), "
                            f"got a {type(result).__name__} of length {len(result)}.")
        loss, metrics = result
    else:
        loss, metrics = result, {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else repr(type(loss).__name__)
        raise HookError(f"{name} must return a scalar loss tensor (e.g. loss.mean()), got {what}.")
    for key, value in metrics.items():
        if not isinstance(value, torch.Tensor):
            raise HookError(f"{name} returned metric {key!r} as {type(value).__name__}; metrics must be tensors "
                            f"(e.g. torch.tensor({value!r})).")
        if training and "eval" not in key and value.numel() != 1:
            raise HookError(f"{name} returned non-scalar metric {key!r} of shape {tuple(value.shape)} during "
                            "training; only scalars are allowed there (put 'eval' in the name to skip it).")
    # forward_step runs under autocast: hand metrics on in fp32, as they were before mixed precision
    metrics = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in metrics.items()}
    return loss.reshape(()), metrics


class ScalarAverager:
    """Sums of scalar values kept on the device; reduced across ranks only when a report is due.

    Values equal to -100 are "no value on this rank" and do not count (SAT convention).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        value = value.detach().reshape(()).float()
        valid = (value != NO_VALUE).float() * weight
        total = torch.where(valid > 0, value, torch.zeros_like(value)) * valid
        if name in self.sums:
            self.sums[name] += total
            self.counts[name] += valid
        else:
            self.sums[name], self.counts[name] = total, valid.clone()

    def reduce(self, accelerator) -> dict[str, float]:
        """Weighted means over everything added, on every rank (one all-reduce); resets the sums."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        packed = torch.stack([self.sums[n] for n in names] + [self.counts[n] for n in names]).to(accelerator.device)
        packed = accelerator.reduce(packed, reduction="sum").cpu().tolist()
        self.sums, self.counts = {}, {}
        half = len(names)
        return {n: packed[i] / packed[half + i] for i, n in enumerate(names) if packed[half + i] > 0}
