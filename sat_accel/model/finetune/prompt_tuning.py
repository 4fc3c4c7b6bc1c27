"""Prefix tuning / P-tuning v2 (SAT's ``PrefixTuningMixin``): learned keys and values per layer, attended by
every query as if they were extra positions."""
from __future__ import annotations

import torch

from ...errors import ConfigError
from ..mixin_base import BaseMixin
from ..transformer import attention_fn_default


class PrefixTuningMixin(BaseMixin):
    """``prefix_len`` learned key/value positions per layer, appended to the keys and values.

    Parameters ``prefix.<layer>`` ``[2, num_attention_heads, prefix_len, hidden_size_per_attention_head]``
    (keys then values), drawn from N(0, 0.01) as in SAT. ``num_attention_heads`` must equal the model's
    key/value heads. The mask gets ``prefix_len`` columns of ones (a ``ones(1, 1)`` full mask stays as is).
    """

    def __init__(self, num_layers: int, hidden_size_per_attention_head: int, num_attention_heads: int,
                 prefix_len: int):
        super().__init__()
        self.prefix = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(2, num_attention_heads, prefix_len, hidden_size_per_attention_head) * 0.01)
            for _ in range(num_layers))
        self.prefix_len = prefix_len

    @BaseMixin.non_conflict
    def attention_fn(self, q, k, v, mask, dropout_fn, old_impl=attention_fn_default, **kw_args):
        """Append this layer's prefix to ``k``/``v`` (``[b, nkv, s, d]``) and extend the mask to match."""
        prefix_k, prefix_v = self.prefix[kw_args["layer_id"]]         # each [nkv, p, d]
        if prefix_k.shape[0] != k.shape[1] or prefix_k.shape[-1] != k.shape[-1]:
            raise ConfigError(f"PrefixTuningMixin was built for {prefix_k.shape[0]} heads of size "
                              f"{prefix_k.shape[-1]} but the model's keys have {k.shape[1]} heads of size "
                              f"{k.shape[-1]}; pass the model's key/value head count and head size.")
        b = k.shape[0]
        k = torch.cat((k, prefix_k.to(k.dtype).unsqueeze(0).expand(b, -1, -1, -1)), dim=2)
        v = torch.cat((v, prefix_v.to(v.dtype).unsqueeze(0).expand(b, -1, -1, -1)), dim=2)
        if mask.numel() > 1:
            ones = torch.ones(*mask.shape[:-1], self.prefix_len, dtype=mask.dtype, device=mask.device)
            mask = torch.cat((mask, ones), dim=-1)
        return old_impl(q, k, v, mask, dropout_fn, **kw_args)


PTuningV2Mixin = PrefixTuningMixin
