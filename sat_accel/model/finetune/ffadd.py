"""SAT's ``FFADDMixin``: a small parallel feed-forward branch added to the MLP of chosen layers."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..mixin_base import BaseMixin
from ..transformer import mlp_forward_default


class FFADDMixin(BaseMixin):
    """``mlp(h) + up(act(down(h)))`` with ``down: hidden -> r``, ``up: r -> hidden`` in ``layer_range``.

    ``up`` starts at zero, so the model's function is unchanged until training moves it (SAT's init; ``down``
    keeps torch's default Linear init). Replaces ``mlp_forward``; the MLP's dropout still applies after it.
    (SAT's own constructor raises NameError; this one is what it was meant to be.)
    """

    def __init__(self, hidden_size: int, layer_num: int = 24, r: int = 0, layer_range: Optional[Sequence[int]] = None):
        super().__init__()
        self.r = r
        self.layer_range = list(range(layer_num)) if layer_range is None else list(layer_range)
        self.ffadd_linear = torch.nn.ModuleList(torch.nn.ModuleList() for _ in range(layer_num))
        for i in self.layer_range:
            self.ffadd_linear[i].append(torch.nn.Linear(hidden_size, r))
            self.ffadd_linear[i].append(torch.nn.Linear(r, hidden_size))
            torch.nn.init.zeros_(self.ffadd_linear[i][1].weight)
            torch.nn.init.zeros_(self.ffadd_linear[i][1].bias)

    def mlp_forward(self, hidden_states, layer_id=None, **kw_args):
        """The model's MLP output plus the added branch on layers in ``layer_range``."""
        layer_id = int(layer_id)
        output = mlp_forward_default(self, hidden_states, layer_id=layer_id, **kw_args)
        if layer_id in self.layer_range:
            down, up = self.ffadd_linear[layer_id]
            activation = self.transformer.layers[layer_id].mlp.activation_func
            output = output + up(activation(down(hidden_states)))
        return output
