"""SAT's `sat.model.mixins`: BaseMixin, the finetune mixins and CachedAutoregressiveMixin in one place.

The mixin contract (hooks, ``non_conflict`` / ``replacable``) is documented in mixin_base.py; the finetune
mixins live in finetune/ (one file each, as in SAT).
"""
from __future__ import annotations

import torch

from .finetune import (AdapterMixin, FFADDMixin, LoRAMixin, LoraMixin, MLPHeadMixin, PrefixTuningMixin,
                       PTuningV2Mixin)
from .mixin_base import BaseMixin, non_conflict, replacable

__all__ = ["BaseMixin", "non_conflict", "replacable", "MLPHeadMixin", "PrefixTuningMixin", "PTuningV2Mixin",
           "LoraMixin", "LoRAMixin", "AdapterMixin", "FFADDMixin", "CachedAutoregressiveMixin"]


class CachedAutoregressiveMixin(BaseMixin):
    """KV cache for incremental decoding (SAT's): one generation step costs one token's forward.

    Wraps ``attention_fn``: it records this step's (rotary-applied, detached) keys and values as
    ``output_this_layer['mem_kv']`` ``[b, s, 2 * nkv * d]`` (per position: K heads, then V heads) and,
    when ``mems`` ``[layers, b, cached, 2 * nkv * d]`` is passed to the model, attends over the cached
    positions followed by the new ones. The caller passes absolute ``position_ids`` and a mask of
    shape ``[..., s, cached + s]``; ``filling_sequence`` does both.
    """

    @non_conflict
    def attention_fn(self, q, k, v, mask, dropout_fn, mems=None, cross_attention=False, old_impl=None, **kw):
        if not cross_attention:
            b, nkv, s, d = k.shape
            # [2, b, nkv, s, d] -> [b, s, 2, nkv, d] -> [b, s, 2 * nkv * d]
            kw["output_this_layer"]["mem_kv"] = torch.stack((k, v)).permute(1, 3, 0, 2, 4).reshape(
                b, s, 2 * nkv * d).detach()
            if mems is not None:
                mem = mems[kw["layer_id"]]
                mem_k, mem_v = mem.view(mem.shape[0], mem.shape[1], 2, nkv, d).permute(2, 0, 3, 1, 4)
                k = torch.cat((mem_k.expand(b, -1, -1, -1), k), dim=2)
                v = torch.cat((mem_v.expand(b, -1, -1, -1), v), dim=2)
        return old_impl(q, k, v, mask, dropout_fn, cross_attention=cross_attention, mems=mems, **kw)
