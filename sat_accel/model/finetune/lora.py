"""LoRA as SAT's ``LoraMixin`` (sat/model/finetune/lora2.py): low-rank updates on each attention's
``query_key_value`` (one A/B pair per q, k and v) and ``dense`` in ``layer_range``; ``merge_lora()`` folds them in.

    model.add_mixin("lora", LoraMixin(args.num_layers, r=8, lora_alpha=16), reinit=True)

``reinit`` swaps the Linear layers for ``LoraLinear`` (so add the mixin with ``reinit=True``, as in SAT).
A ``LoraLinear`` keeps the original ``weight``/``bias`` under their old names, so a base checkpoint loads
into it unchanged; its ``matrix_A.<i>`` / ``matrix_B.<i>`` are marked as mixin parameters, which the loader
accepts as missing in finetune mode (they keep their init: B = 0, so the model starts as the base model).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ...errors import ConfigError
from ..mixin_base import BaseMixin, mark_mixin_parameter


class LoraLinear(torch.nn.Linear):
    """``x W^T + b + cat_i(dropout(x) A_i^T B_i^T) * alpha / r``: one A/B pair per output block (``splits``)."""

    def __init__(self, linear: torch.nn.Linear, splits: Sequence[int], r: int, lora_alpha: float, lora_dropout: float):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the frozen original, same parameter objects
        self.splits, self.r, self.scaling = list(splits), r, lora_alpha / r
        self.lora_dropout = torch.nn.Dropout(lora_dropout) if lora_dropout > 0 else torch.nn.Identity()
        like = {"dtype": linear.weight.dtype, "device": linear.weight.device}
        self.matrix_A = torch.nn.ParameterList(torch.nn.Parameter(torch.empty(r, self.in_features, **like))
                                               for _ in self.splits)
        self.matrix_B = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(out, r, **like)) for out in self.splits)
        with torch.no_grad():
            for a in self.matrix_A:
                torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        for p in (*self.matrix_A, *self.matrix_B):
            mark_mixin_parameter(p)

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update as a dense ``[out, in]`` matrix."""
        return torch.cat([b @ a for a, b in zip(self.matrix_A, self.matrix_B)], dim=0) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = super().forward(x)
        h = self.lora_dropout(x)
        update = torch.cat([(h @ a.T.to(h.dtype)) @ b.T.to(h.dtype) for a, b in zip(self.matrix_A, self.matrix_B)], -1)
        return base + update * self.scaling

    def merged(self) -> torch.nn.Linear:
        """A plain ``nn.Linear`` computing the same function (weight + delta)."""
        merged = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                                 dtype=self.weight.dtype, device=self.weight.device)
        with torch.no_grad():
            merged.weight.copy_(self.weight + self.delta_weight().to(self.weight.dtype))
            if self.bias is not None:
                merged.bias.copy_(self.bias)
        return merged


class LoraMixin(BaseMixin):
    """SAT's lora2 ``LoraMixin(layer_num, r=0, lora_alpha=1, lora_dropout=0., layer_range=None, qlora=False,
    cross_attention=True)``. No hooks: ``reinit(model)`` rewires the attention Linears."""

    def __init__(self, layer_num: int, r: int = 0, lora_alpha: float = 1, lora_dropout: float = 0.0,
                 layer_range: Optional[Sequence[int]] = None, qlora: bool = False, cross_attention: bool = True):
        super().__init__()
        if r <= 0:
            raise ConfigError(f"LoraMixin needs a rank r >= 1, got r={r}; e.g. LoraMixin(num_layers, r=8).")
        if qlora:
            raise ConfigError("LoraMixin(qlora=True) needs bitsandbytes NF4 layers, which sat_accel does not build; "
                              "use qlora=False (bf16 weights with --bf16 save most of the memory).")
        self.r, self.lora_alpha, self.lora_dropout = r, lora_alpha, lora_dropout
        self.scaling = lora_alpha / r
        self.layer_range = list(range(layer_num)) if layer_range is None else list(layer_range)
        self.cross_attention = cross_attention  # accepted for SAT; this trunk has no cross-attention

    def reinit(self, parent_model: torch.nn.Module = None) -> None:
        """Swap ``query_key_value`` and ``dense`` of every layer in ``layer_range`` for LoraLinear (once)."""
        layers = (parent_model.transformer if parent_model is not None else self.transformer).layers
        for i in self.layer_range:
            attn = layers[i].attention
            if isinstance(attn.query_key_value, LoraLinear):
                continue  # already rewired (reinit called again, e.g. by a loader)
            qkv_splits = [attn.num_heads * attn.head_dim] + [getattr(attn, "num_kv_heads", attn.num_heads)
                                                            * attn.head_dim] * 2
            attn.query_key_value = self._lora(attn.query_key_value, qkv_splits)
            attn.dense = self._lora(attn.dense, [attn.dense.out_features])

    def _lora(self, linear: torch.nn.Linear, splits: list[int]) -> LoraLinear:
        return LoraLinear(linear, splits, self.r, self.lora_alpha, self.lora_dropout)

    def merge_lora(self) -> None:
        """Replace every LoraLinear by the equivalent plain Linear (for inference or export)."""
        for i in self.layer_range:
            attn = self.transformer.layers[i].attention
            for name in ("query_key_value", "dense"):
                layer = getattr(attn, name)
                if isinstance(layer, LoraLinear):
                    setattr(attn, name, layer.merged())


class LoRAMixin(BaseMixin):
    """SAT's older LoRA (sat/model/finetune/lora.py) is not provided; use ``LoraMixin`` (SAT's lora2)."""

    def __init__(self, *args, **kwargs):
        raise ConfigError("LoRAMixin (SAT's old lora.py) is not provided; use LoraMixin(num_layers, r=..., "
                          "lora_alpha=..., layer_range=...) added with reinit=True.")
