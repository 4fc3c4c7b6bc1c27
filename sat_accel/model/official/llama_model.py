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
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..base_model import BaseModel
from ..initialization import DEFAULT_INITIALIZER_RANGE
from ..mixin_base import BaseMixin, RuleInitMixin
from ..transformer import BaseTransformer, attend_and_project, split_qkv

ROPE_TYPES = ("default", "linear", "llama3")


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


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: Optional[dict]) -> torch.Tensor:
    """``[head_dim / 2]`` rotary frequencies, rescaled as transformers does for ``scaling['rope_type']``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    raise ConfigError(f"rope_scaling type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)}); "
                      "use transformers for this checkpoint.")


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band between blended.
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
    return torch.where(medium, blended, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dimension (the NeoX/LLaMA rotary layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryMixin(BaseMixin):
    """Rotary positions on q and k inside ``attention_forward`` (positions = ``position_ids``)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: Optional[dict] = None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        rope_inverse_frequencies(head_dim, theta, scaling)  # unsupported scaling fails at build time
        self._inv_freq: Optional[torch.Tensor] = None  # plain attribute, made on first use (meta-safe)
        self._memo: tuple = (None, None)                # (position_ids, (cos, sin)) of the last forward

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype):
        """``[b, 1, s, d]`` cos and sin for ``[b, s]`` positions (shared by every layer of one forward)."""
        if self._memo[0] is position_ids and self._memo[1][0].dtype == dtype:
            return self._memo[1]
        if self._inv_freq is None or self._inv_freq.device != position_ids.device:
            self._inv_freq = rope_inverse_frequencies(self.head_dim, self.theta, self.scaling).to(position_ids.device)
        freqs = position_ids.float()[..., None] * self._inv_freq          # [b, s, d / 2], fp32
        angles = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)            # [b, 1, s, d]
        result = (angles.cos().to(dtype), angles.sin().to(dtype))
        self._memo = (position_ids, result)
        return result

    def attention_forward(self, hidden_states: torch.Tensor, mask, **kw):
        attn = self.transformer.layers[kw["layer_id"]].attention
        q, k, v = split_qkv(attn, hidden_states)
        cos, sin = self.cos_sin(kw["position_ids"], q.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
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
