"""GPT-2 in SAT's layout: pre-LN causal decoder, learned positions, output tied to the word embeddings.

    model = GPT2Model(GPT2Model.get_args(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=100))
    logits, *_ = model(ids, position_ids, attention_mask)   # causal: pass a [b, 1, s, s] tril mask

Everything is BaseModel's default: tanh-GELU ("gelu_new"), pre-LN with a final layernorm, the default
``final_forward`` (tied word embeddings) and SAT's init, which is GPT-2's (N(0, 0.02), output
projections N(0, 0.02 / sqrt(2 L))). As in SAT, ``attention_mask=None`` means full attention: causal
use passes a lower-triangular mask (``sat_accel.generation.causal_inputs`` builds it for padded batches).
"""
from __future__ import annotations

from ..base_model import BaseModel


class GPT2Model(BaseModel):
    """SAT's GPT-2 (with HF's tied head): the plain pre-LN BaseModel under its own class name."""

    ARCH_DEFAULT_OVERRIDES = {"max_sequence_length": 1024, "vocab_size": 50257, "layernorm_epsilon": 1e-5}
