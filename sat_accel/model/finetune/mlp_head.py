"""SAT's classification head: ``MLPHeadMixin`` replaces ``final_forward`` with a small MLP."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..mixin_base import BaseMixin


class MLPHeadMixin(BaseMixin):
    """Replaces ``final_forward`` with an MLP over every position: ``[b, s, h] -> [b, s, sizes[-1]]``.

    ``MLPHeadMixin(hidden, 2048, 1)`` = Linear(h, 2048) -> activation -> Linear(2048, 1), weights
    drawn from N(init_mean, init_std) and zero biases (SAT's finetune head).
    """

    def __init__(self, hidden_size: int, *output_sizes: int, bias: bool = True,
                 activation_func: Callable = F.relu, init_mean: float = 0.0, init_std: float = 0.005):
        super().__init__()
        self.activation_func = activation_func
        self.init_mean, self.init_std = init_mean, init_std
        sizes = (hidden_size, *output_sizes)
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(n_in, n_out, bias=bias) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.reinit()

    def reinit(self, parent_model: torch.nn.Module | None = None) -> None:
        """Weights ~ N(init_mean, init_std), biases 0."""
        for layer in self.layers:
            torch.nn.init.normal_(layer.weight, mean=self.init_mean, std=self.init_std)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)

    def final_forward(self, logits: torch.Tensor, **kw_args) -> torch.Tensor:
        """Apply the MLP to the final hidden states (all positions)."""
        for i, layer in enumerate(self.layers):
            if i > 0:
                logits = self.activation_func(logits)
            logits = layer(logits)
        return logits
