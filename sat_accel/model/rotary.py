"""Rotary position embeddings (rotate-half / NeoX / LLaMA layout) with transformers' frequency scalings.

``RotaryEmbedding(head_dim, theta, scaling)(q, k, position_ids)`` rotates ``[b, h, s, d]`` queries and keys
by their absolute positions; cos/sin are computed in fp32 once per forward (every layer gets the same
``position_ids`` object) and cast to the activations' dtype, as transformers does.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import ConfigError

ROPE_TYPES = ("default", "linear", "llama3")


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


class RotaryEmbedding:
    """Rotary positions for one model (no parameters; frequencies made on first use, so meta builds work)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: Optional[dict] = None):
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        rope_inverse_frequencies(head_dim, theta, scaling)  # unsupported scaling fails at build time
        self._inv_freq: Optional[torch.Tensor] = None
        self._memo: tuple = (None, None)  # (position_ids, (cos, sin)) of the last forward

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype):
        """``[b, 1, s, d]`` cos and sin for ``[b, s]`` positions."""
        position_memo, cached = self._memo
        if position_memo is position_ids and cached[0].dtype == dtype:
            return cached
        if self._inv_freq is None or self._inv_freq.device != position_ids.device:
            self._inv_freq = rope_inverse_frequencies(self.head_dim, self.theta, self.scaling).to(position_ids.device)
        freqs = position_ids.float()[..., None] * self._inv_freq          # [b, s, d / 2], fp32
        angles = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)            # [b, 1, s, d]
        result = (angles.cos().to(dtype), angles.sin().to(dtype))
        self._memo = (position_ids, result)
        return result

    def __call__(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor):
        """Rotated ``(q, k)``."""
        cos, sin = self.cos_sin(position_ids, q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
