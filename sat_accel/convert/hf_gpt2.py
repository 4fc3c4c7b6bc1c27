"""Hugging Face GPT-2 -> sat_accel GPT2Model: pure functions over configs and state dicts.

HF's GPT-2 uses ``Conv1D`` (weights stored ``[in, out]``): every projection is transposed. ``c_attn``
is already ``[q | k | v]``, SAT's ``query_key_value`` order. The output head is tied to ``wte``.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .hf_common import check_hf_config, check_layer_count, layer_pairs, require, take, warn_leftovers

_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older checkpoints


def hf_gpt2_config_to_args(hf_config: dict) -> dict:
    """HF ``config.json`` of a GPT-2 -> SAT args plus ``"model_class": "GPT2Model"``."""
    check_hf_config(hf_config, "GPT2Model", {
        "model_type": (hf_config.get("model_type", "gpt2") == "gpt2", "'gpt2'"),
        "activation_function": (hf_config.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
                                "'gelu_new' (tanh GELU)"),
        "scale_attn_by_inverse_layer_idx": (not hf_config.get("scale_attn_by_inverse_layer_idx", False), "false"),
        "scale_attn_weights": (hf_config.get("scale_attn_weights", True), "true"),
        "add_cross_attention": (not hf_config.get("add_cross_attention", False), "false"),
        "tie_word_embeddings": (hf_config.get("tie_word_embeddings", True), "true (tied output head)"),
    })
    h = require(hf_config, "n_embd")
    return {
        "model_class": "GPT2Model",
        "num_layers": require(hf_config, "n_layer"), "hidden_size": h,
        "num_attention_heads": require(hf_config, "n_head"), "vocab_size": require(hf_config, "vocab_size"),
        "max_sequence_length": require(hf_config, "n_positions"), "layernorm_order": "pre",
        "inner_hidden_size": hf_config.get("n_inner") or 4 * h, "hidden_size_per_attention_head": None,
        "layernorm_epsilon": hf_config.get("layer_norm_epsilon", 1e-5),
        "hidden_dropout": hf_config.get("resid_pdrop", 0.1), "attention_dropout": hf_config.get("attn_pdrop", 0.1),
    }


_LAYER = {"input_layernorm": "ln_1", "post_attention_layernorm": "ln_2", "attention.query_key_value": "attn.c_attn",
          "attention.dense": "attn.c_proj", "mlp.dense_h_to_4h": "mlp.c_fc", "mlp.dense_4h_to_h": "mlp.c_proj"}


def _pairs(num_layers: int) -> Iterator[tuple[str, str]]:
    yield "transformer.word_embeddings.weight", "wte.weight"
    yield "transformer.position_embeddings.weight", "wpe.weight"
    for p in ("weight", "bias"):
        yield f"transformer.final_layernorm.{p}", f"ln_f.{p}"
    yield from layer_pairs(num_layers, "h.", _LAYER)


def _flip(key: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t().contiguous() if key.endswith(_TRANSPOSED) else tensor


def hf_to_sat_gpt2(hf_state_dict: dict, sat_args: dict) -> dict:
    """HF ``GPT2LMHeadModel``/``GPT2Model`` weights -> sat_accel GPT2Model state dict."""
    hf = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in hf_state_dict.items()
          if not k.endswith(_BUFFERS)}
    hf.pop("lm_head.weight", None)  # tied to wte
    check_layer_count(hf, "h.", 1, sat_args["num_layers"], "GPT-2")
    sat = {s: _flip(k, take(hf, k, "HF GPT-2 weights")) for s, k in _pairs(sat_args["num_layers"])}
    warn_leftovers(hf, "HF GPT-2")
    return sat


def sat_to_hf_gpt2(sat_state_dict: dict, sat_args: dict) -> dict:
    """sat_accel GPT2Model state dict -> HF ``GPT2LMHeadModel`` weights (tied ``lm_head`` included)."""
    sat = dict(sat_state_dict)
    hf = {f"transformer.{k}": _flip(k, take(sat, s, "sat_accel GPT-2 weights"))
          for s, k in _pairs(sat_args["num_layers"])}
    hf["lm_head.weight"] = hf["transformer.wte.weight"]
    warn_leftovers(sat, "sat_accel GPT-2 -> HF")
    return hf
