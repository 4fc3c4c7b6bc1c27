"""Adapters (SAT's ``AdapterMixin``, Houlsby et al.): a bottleneck MLP added to each layer's attention output
and MLP output, before their residual additions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mixin_base import BaseMixin
from ..transformer import run_layer


class AdapterMixin(BaseMixin):
    """Per layer: ``ff2(gelu(ff1(attention_out)))`` and ``ff4(gelu(ff3(mlp_out)))`` added to those outputs.

    Replaces ``layer_forward`` (as SAT's does), following the model's layernorm order. Weights are drawn
    from a truncated N(0, 1e-3) with zero biases, so a fresh adapter starts close to the identity; the
    loader re-draws them (``reinit``) when a finetune checkpoint lacks them.
    """

    def __init__(self, num_layers: int, hidden_size: int, adapter_hidden: int):
        super().__init__()

        def linears(n_in: int, n_out: int) -> torch.nn.ModuleList:
            return torch.nn.ModuleList(torch.nn.Linear(n_in, n_out) for _ in range(num_layers))

        self.ff1, self.ff2 = linears(hidden_size, adapter_hidden), linears(adapter_hidden, hidden_size)
        self.ff3, self.ff4 = linears(hidden_size, adapter_hidden), linears(adapter_hidden, hidden_size)
        self.reinit()

    def layer_forward(self, hidden_states, mask, *args, **kw_args):
        """The model's block with the two bottlenecks applied (``[b, s, h] -> [b, s, h]``)."""
        i = kw_args["layer_id"]
        return run_layer(self.transformer.layers[i], hidden_states, mask,
                         adapt_attention=lambda out: out + self.ff2[i](F.gelu(self.ff1[i](out))),
                         adapt_mlp=lambda out: out + self.ff4[i](F.gelu(self.ff3[i](out))), **kw_args)

    @torch.no_grad()
    def reinit(self, parent_model=None) -> None:
        """Truncated N(0, 1e-3) weights and zero biases (adapter-BERT's init, as SAT)."""
        for linear in (*self.ff1, *self.ff2, *self.ff3, *self.ff4):
            torch.nn.init.trunc_normal_(linear.weight, std=1e-3)
            torch.nn.init.zeros_(linear.bias)
