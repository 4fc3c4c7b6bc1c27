"""LLaMA in SAT's layout: RMSNorm, rotary positions, act(gate) * up MLP, grouped-query attention.

    model = LLaMAModel(LLaMAModel.get_args(num_layers=2, hidden_size=64, num_attention_heads=4,
                                           num_multi_query_heads=2, vocab_size=100))
    logits, *_ = model(ids, position_ids, attention_mask)   # causal: pass a [b, 1, s, s] tril mask

Mixins: 'rotary' (``attention_forward`` with rotary q/k) and 'lm' (untied ``lm_head``; absent with
``tie_word_embeddings``). Rotary scaling follows transformers' ``rope_type`` 'default', 'linear' and
'llama3'. Mistral and Qwen2 checkpoints use the same class (``use_qkv_bias`` for Qwen2).
"""
from __future__ import annotations

import argparse
import json
from typing import Optional

import torch
import torch.nn.functional as F

from ..base_model import BaseModel
from ..initialization import DEFAULT_INITIALIZER_RANGE
from ..mixin_base import BaseMixin, RuleInitMixin
from ..rotary import RotaryEmbedding
from ..transformer import BaseTransformer, attend_and_project, split_qkv

class RMSNorm(torch.nn.Module):
    """``weight * x / rms(x)``, computed in fp32 and cast back (as transformers' LlamaRMSNorm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=dtype))

    def reset_parameters(self) -> None:
        torch.nn.init.ones_(self.weight)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class RotaryMixin(BaseMixin):
    """Rotary positions on q and k inside ``attention_forward`` (positions = ``position_ids``), with the
    checkpoint's base and scaling (the trunk's own ``--is-rotary-emb`` rotary uses base 10000, unscaled)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: Optional[dict] = None):
        super().__init__()
        self.rotary = RotaryEmbedding(head_dim, theta, scaling)

    def attention_forward(self, hidden_states: torch.Tensor, mask, **kw):
        attn = self.transformer.layers[kw["layer_id"]].attention
        q, k, v = split_qkv(attn, hidden_states)
        q, k = self.rotary(q, k, kw["position_ids"])
        return attend_and_project(self, attn, q, k, v, mask, **kw)


class LMMixin(RuleInitMixin):
    """Untied output projection ``lm_head`` (no bias) as ``final_forward``."""

    def __init__(self, vocab_size: int, hidden_size: int, dtype: torch.dtype = torch.float32,
                 init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__(init_std)
        self.lm_head = torch.nn.Linear(hidden_size, vocab_size, bias=False, dtype=dtype)
        self.init_submodules_(init_std)

    def final_forward(self, logits: torch.Tensor, **kw_args) -> torch.Tensor:
        return self.lm_head(logits)


def _json_dict(value: str) -> Optional[dict]:
    return None if value in (None, "", "null") else json.loads(value)


class LLaMAModel(BaseModel):
    """SAT's LLaMA (also Mistral / Qwen2 layouts): pre-RMSNorm, SiLU-gated MLP, rotary, optional GQA.

    Initialised as transformers' LLaMA: Linear/Embedding N(0, 0.02) (output projections not scaled),
    unit RMSNorm weights, ``lm_head`` included."""

    scale_output_init = False

    def __init__(self, args: argparse.Namespace, transformer: Optional[BaseTransformer] = None,
                 params_dtype: torch.dtype = torch.float32, **kwargs):
        kwargs.setdefault("activation_func", F.silu)
        kwargs.setdefault("layernorm", RMSNorm)
        kwargs.update(is_rotary_emb=True, is_gated_mlp=True, use_bias=False)
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        arch, specific = self.transformer.arch, self._model_specific
        head_dim = arch["hidden_size_per_attention_head"] or arch["hidden_size"] // arch["num_attention_heads"]
        scaling = specific.get("rope_scaling")
        self.add_mixin("rotary", RotaryMixin(head_dim, specific.get("rope_theta") or 10000.0,
                                             _json_dict(scaling) if isinstance(scaling, str) else scaling))
        if not specific.get("tie_word_embeddings"):
            self.add_mixin("lm", LMMixin(arch["vocab_size"], arch["hidden_size"], params_dtype,
                                         init_std=self.initializer_range))

    ARCH_DEFAULT_OVERRIDES = {"layernorm_epsilon": 1e-6, "hidden_dropout": 0.0, "attention_dropout": 0.0}

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Rotary base/scaling, GQA heads, qkv bias, tied head and token ids (defaults: LLaMA's)."""
        group = parser.add_argument_group("LLaMA", "LLaMA configuration")
        # --num-multi-query-heads is one of get_args' model flags (as in SAT): adding it here too would put it in
        # both namespaces of SAT's `Namespace(**vars(args), **vars(known))` idiom.
        known = {s for action in parser._actions for s in action.option_strings}
        if "--use-qkv-bias" not in known:
            group.add_argument("--use-qkv-bias", action="store_true", help="bias on the qkv projection (Qwen2)")
        group.add_argument("--rope-theta", type=float, default=10000.0, help="rotary base")
        group.add_argument("--rope-scaling", type=_json_dict, default=None,
                           help='rotary scaling as JSON, e.g. {"rope_type": "llama3", "factor": 8, ...}')
        group.add_argument("--tie-word-embeddings", action="store_true",
                           help="output projection = word embeddings (no 'lm' mixin)")
        group.add_argument("--sliding-window", type=int, default=None,
                           help="Mistral's attention window in tokens (recorded; masks apply it: causal_inputs)")
        group.add_argument("--bos-token-id", type=int, default=1)
        group.add_argument("--eos-token-id", type=int, default=2)
        group.add_argument("--pad-token-id", type=int, default=-1)
        return super().add_model_specific_args(parser)
