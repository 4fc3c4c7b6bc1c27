"""Collecting evaluation results across ranks without counting padding twice.

Each eval batch comes with its number of real examples on this rank (`real`, 0..B). Strict batches hold
real examples only (the last one may be short); a rank with none left gets one padding example and
`real` 0, which counts for nothing. The loss and scalar metrics are averaged weighted by `real` over all
ranks. With handle_metrics_function the main process receives every metric from every rank: scalars
stacked (one per rank and batch that had real examples), per-example tensors concatenated.
A metric is a scalar when it is 0-dimensional.
"""
from __future__ import annotations

from typing import Callable

import torch
from accelerate.utils import broadcast_object_list, gather_object

from ..errors import HookError
from .steps import ScalarAverager


class EvalCollector:
    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.averager = ScalarAverager(accelerator.device)
        self.local: dict[str, list[torch.Tensor]] = {}
        self.scalar_names: set[str] = set()

    def add(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], real: int) -> None:
        self.averager.add("loss", loss, float(real))
        for name, value in metrics.items():
            value = value.detach()
            if value.dim() == 0:  # by rank, not by size: a 1-example tail batch is still per-example
                self.averager.add(name, value, float(real))
                self.scalar_names.add(name)
                if real > 0:
                    self.local.setdefault(name, []).append(value.reshape(1).float().cpu())
            elif real > 0:
                self.local.setdefault(name, []).append(value.cpu())
            else:
                self.local.setdefault(name, [])

    def finish(self, handle_metrics: Callable | None) -> tuple[float, dict[str, float]]:
        """(loss, metrics) identical on every rank."""
        means = self.averager.reduce(self.accelerator)
        loss = means.pop("loss", float("nan"))
        non_scalar = [n for n in self.local if n not in self.scalar_names]
        if handle_metrics is None:
            if non_scalar:
                raise HookError(f"forward_step_eval returned non-scalar metrics {non_scalar}; reduce them to "
                                "scalars or pass handle_metrics_function to training_main.")
            return loss, means
        return loss, self._handled(handle_metrics)

    def _handled(self, handle_metrics: Callable) -> dict[str, float]:
        per_rank = gather_object([self.local])
        result = None
        if self.accelerator.is_main_process:
            total = {}
            for name in self.local:
                parts = [p for rank_metrics in per_rank for p in rank_metrics.get(name, [])]
                total[name] = torch.cat(parts) if parts else torch.empty(0)
            returned = handle_metrics(total)
            if isinstance(returned, dict):
                result = {k: float(v) for k, v in returned.items()}
            else:  # raised on every rank below, so no rank is left waiting in a collective
                result = f"handle_metrics_function must return a dict of scalars, got {type(returned).__name__}."
        result = broadcast_object_list([result])[0]
        if isinstance(result, str):
            raise HookError(result)
        return result
