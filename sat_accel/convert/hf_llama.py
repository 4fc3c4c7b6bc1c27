"""Hugging Face LLaMA / Mistral / Qwen2 -> sat_accel LLaMAModel: pure functions over configs and state dicts.

What differs between the two layouts:

* HF keeps q, k, v apart; SAT concatenates them into ``query_key_value`` as ``[q | k | v]`` (no
  permutation: both use the same rotate-half rotary layout). With GQA, k and v have ``nkv`` heads.
* ``gate_proj`` -> ``mlp.dense_h_to_4h_gate``, ``up_proj`` -> ``mlp.dense_h_to_4h``,
  ``down_proj`` -> ``mlp.dense_4h_to_h``; ``lm_head`` -> ``mixins.lm.lm_head`` (absent when tied).
* Mistral's ``sliding_window`` is recorded in the args; the window is a property of the mask
  (``causal_inputs(padding_mask, sliding_window=W)``), as every mask is the caller's in SAT.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch

from ..errors import CheckpointError
from .hf_common import check_hf_config, check_layer_count, layer_pairs, require, take, warn_leftovers

logger = logging.getLogger(__name__)

MODEL_TYPES = ("llama", "mistral", "qwen2")
_LM = "mixins.lm.lm_head.weight"


def _rope(hf_config: dict) -> tuple[float, dict | None]:
    """(theta, scaling or None) from transformers 5's ``rope_parameters`` or 4's ``rope_theta``/``rope_scaling``."""
    params = dict(hf_config.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf_config.get("rope_theta", 10000.0))
    scaling = params if params.get("rope_type", "default") != "default" else hf_config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return float(theta), scaling or None


def hf_llama_config_to_args(hf_config: dict) -> dict:
    """HF ``config.json`` of a LLaMA-family model -> SAT args plus ``"model_class": "LLaMAModel"``."""
    model_type = hf_config.get("model_type", "llama")
    check_hf_config(hf_config, "LLaMAModel", {
        "model_type": (model_type in MODEL_TYPES, f"one of {', '.join(MODEL_TYPES)}"),
        "hidden_act": (hf_config.get("hidden_act", "silu") == "silu", "'silu'"),
        "mlp_bias": (not hf_config.get("mlp_bias", False), "false"),
        "use_sliding_window": (not hf_config.get("use_sliding_window", False), "false"),
        "pretraining_tp": (hf_config.get("pretraining_tp", 1) == 1, "1"),
    })
    window = hf_config.get("sliding_window") if model_type == "mistral" else None
    if window and window < hf_config.get("max_position_embeddings", 0):
        logger.info("HF %s config has sliding_window=%d (kept as args.sliding_window): masks decide the window, "
                    "so build them with causal_inputs(padding_mask, sliding_window=%d).", model_type, window, window)
    h, nh = require(hf_config, "hidden_size"), require(hf_config, "num_attention_heads")
    head_dim = hf_config.get("head_dim") or h // nh
    nkv = hf_config.get("num_key_value_heads") or nh
    theta, scaling = _rope(hf_config)
    return {
        "model_class": "LLaMAModel",
        "num_layers": require(hf_config, "num_hidden_layers"), "hidden_size": h, "num_attention_heads": nh,
        "vocab_size": require(hf_config, "vocab_size"),
        "max_sequence_length": hf_config.get("max_position_embeddings", 2048),
        "inner_hidden_size": require(hf_config, "intermediate_size"),
        "hidden_size_per_attention_head": None if head_dim * nh == h else head_dim,
        "layernorm_epsilon": hf_config.get("rms_norm_eps", 1e-6),
        "hidden_dropout": 0.0, "attention_dropout": hf_config.get("attention_dropout", 0.0),
        "num_multi_query_heads": 0 if nkv == nh else nkv,
        "use_qkv_bias": bool(hf_config.get("attention_bias", model_type == "qwen2")),
        "rope_theta": theta, "rope_scaling": scaling,
        "tie_word_embeddings": bool(hf_config.get("tie_word_embeddings", False)), "sliding_window": window,
        **{k: hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    }


_LAYER = {"input_layernorm": "input_layernorm", "post_attention_layernorm": "post_attention_layernorm",
          "attention.dense": "self_attn.o_proj", "mlp.dense_h_to_4h_gate": "mlp.gate_proj",
          "mlp.dense_h_to_4h": "mlp.up_proj", "mlp.dense_4h_to_h": "mlp.down_proj"}


def _pairs(num_layers: int) -> Iterator[tuple[str, str]]:
    """(sat key, hf key) for every 1:1 tensor (q/k/v and lm_head excluded)."""
    yield "transformer.word_embeddings.weight", "model.embed_tokens.weight"
    yield "transformer.final_layernorm.weight", "model.norm.weight"
    yield from layer_pairs(num_layers, "model.layers.", _LAYER, params=("weight",))


def hf_to_sat_llama(hf_state_dict: dict, sat_args: dict) -> dict:
    """HF ``LlamaForCausalLM``/``LlamaModel`` (or Mistral/Qwen2) weights -> sat_accel LLaMAModel state dict."""
    hf = {(k if k.startswith(("model.", "lm_head.")) else f"model.{k}"): v for k, v in hf_state_dict.items()
          if "rotary_emb.inv_freq" not in k}
    num_layers = sat_args["num_layers"]
    check_layer_count(hf, "model.layers.", 2, num_layers, "LLaMA")
    sat = {s: take(hf, k, "HF LLaMA weights") for s, k in _pairs(num_layers)}
    parts = ("weight", "bias") if sat_args.get("use_qkv_bias") else ("weight",)
    for i in range(num_layers):
        for p in parts:
            sat[f"transformer.layers.{i}.attention.query_key_value.{p}"] = torch.cat(
                [take(hf, f"model.layers.{i}.self_attn.{n}_proj.{p}", "HF LLaMA weights") for n in "qkv"], dim=0)
    head = hf.pop("lm_head.weight", None)
    if not sat_args.get("tie_word_embeddings"):
        if head is None:
            raise CheckpointError("HF LLaMA weights have no lm_head.weight but the config says "
                                  "tie_word_embeddings=false; pass the LlamaForCausalLM checkpoint.")
        sat[_LM] = head
    warn_leftovers(hf, "HF LLaMA")
    return sat


def sat_to_hf_llama(sat_state_dict: dict, sat_args: dict) -> dict:
    """sat_accel LLaMAModel state dict -> HF ``LlamaForCausalLM`` weights (the inverse of hf_to_sat_llama)."""
    sat = dict(sat_state_dict)
    hf = {k: take(sat, s, "sat_accel LLaMA weights") for s, k in _pairs(sat_args["num_layers"])}
    nh, h = sat_args["num_attention_heads"], sat_args["hidden_size"]
    head_dim = sat_args.get("hidden_size_per_attention_head") or h // nh
    nkv = sat_args.get("num_multi_query_heads") or nh
    sizes = [nh * head_dim, nkv * head_dim, nkv * head_dim]
    for i in range(sat_args["num_layers"]):
        for p in ("weight", "bias"):
            qkv = sat.pop(f"transformer.layers.{i}.attention.query_key_value.{p}", None)
            if qkv is not None:
                for name, part in zip("qkv", qkv.split(sizes, dim=0)):
                    hf[f"model.layers.{i}.self_attn.{name}_proj.{p}"] = part.clone()
    if _LM in sat:
        hf["lm_head.weight"] = sat.pop(_LM)
    warn_leftovers(sat, "sat_accel LLaMA -> HF")
    return hf
