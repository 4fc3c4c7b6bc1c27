"""Hugging Face ViT -> sat_accel ViTModel: pure functions over configs and state dicts.

* [CLS] (``embeddings.cls_token`` ``[1, 1, h]``) becomes the one-row word table; the position table
  ``[1, 1 + patches, h]`` becomes ``transformer.position_embeddings``; the patch ``Conv2d`` moves to
  ``mixins.patch_embedding.proj``; ``classifier`` to ``mixins.cls.classifier``.
* q, k, v are concatenated into ``query_key_value``; ``layernorm_before``/``after`` are SAT's
  ``input_layernorm``/``post_attention_layernorm`` (pre-LN). The pooler has no SAT counterpart (dropped).
* Both transformers 4 (``encoder.layer.i.attention.attention.query``) and 5 (``layers.i.attention.q_proj``)
  key names are read.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch

from .hf_common import check_hf_config, check_layer_count, layer_pairs, require, take, warn_leftovers

logger = logging.getLogger(__name__)

_V4_NAMES = (("encoder.layer.", "layers."), (".attention.attention.query.", ".attention.q_proj."),
             (".attention.attention.key.", ".attention.k_proj."), (".attention.attention.value.", ".attention.v_proj."),
             (".attention.output.dense.", ".attention.o_proj."), (".intermediate.dense.", ".mlp.fc1."),
             (".output.dense.", ".mlp.fc2."))
SUPPORTED_ARCHITECTURES = ("ViTModel", "ViTForImageClassification")


def hf_vit_config_to_args(hf_config: dict) -> dict:
    """HF ``config.json`` of a ViT -> SAT args plus ``"model_class": "ViTModel"``."""
    archs = hf_config.get("architectures") or ["ViTModel"]
    check_hf_config(hf_config, "ViTModel", {
        "model_type": (hf_config.get("model_type") == "vit", "'vit'"),
        "architectures": (all(a in SUPPORTED_ARCHITECTURES for a in archs), f"one of {SUPPORTED_ARCHITECTURES}"),
        "hidden_act": (hf_config.get("hidden_act", "gelu") == "gelu", "'gelu' (exact GELU)"),
        "qkv_bias": (hf_config.get("qkv_bias", True), "true"),
    })
    size, h = require(hf_config, "image_size"), require(hf_config, "hidden_size")
    classifies = "ViTForImageClassification" in archs
    labels = hf_config.get("num_labels") or len(hf_config.get("id2label") or {}) or 2
    return {
        "model_class": "ViTModel",
        "num_layers": require(hf_config, "num_hidden_layers"), "hidden_size": h,
        "num_attention_heads": require(hf_config, "num_attention_heads"), "vocab_size": 1,
        "layernorm_order": "pre", "inner_hidden_size": hf_config.get("intermediate_size", 4 * h),
        "hidden_size_per_attention_head": None, "layernorm_epsilon": hf_config.get("layer_norm_eps", 1e-12),
        "hidden_dropout": hf_config.get("hidden_dropout_prob", 0.0),
        "attention_dropout": hf_config.get("attention_probs_dropout_prob", 0.0),
        "image_size": list(size) if isinstance(size, (list, tuple)) else [size, size],
        "patch_size": require(hf_config, "patch_size"), "in_channels": hf_config.get("num_channels", 3),
        "pre_len": 1, "post_len": 0, "num_classes": labels if classifies else 0,
    }


def _normalise(key: str) -> str:
    key = key[len("vit."):] if key.startswith("vit.") else key
    for old, new in _V4_NAMES:
        key = key.replace(old, new)
    return key


_LAYER = {"input_layernorm": "layernorm_before", "post_attention_layernorm": "layernorm_after",
          "attention.dense": "attention.o_proj", "mlp.dense_h_to_4h": "mlp.fc1", "mlp.dense_4h_to_h": "mlp.fc2"}


def _pairs(num_layers: int) -> Iterator[tuple[str, str]]:
    for p in ("weight", "bias"):
        yield f"mixins.patch_embedding.proj.{p}", f"embeddings.patch_embeddings.projection.{p}"
        yield f"transformer.final_layernorm.{p}", f"layernorm.{p}"
    yield from layer_pairs(num_layers, "layers.", _LAYER)


def hf_to_sat_vit(hf_state_dict: dict, sat_args: dict) -> dict:
    """HF ``ViTModel``/``ViTForImageClassification`` weights -> sat_accel ViTModel state dict."""
    hf = {_normalise(k): v for k, v in hf_state_dict.items()}
    num_layers = sat_args["num_layers"]
    check_layer_count(hf, "layers.", 1, num_layers, "ViT")
    what = "HF ViT weights"
    sat = {s: take(hf, k, what) for s, k in _pairs(num_layers)}
    sat["transformer.word_embeddings.weight"] = take(hf, "embeddings.cls_token", what).reshape(1, -1)
    sat["transformer.position_embeddings.weight"] = take(hf, "embeddings.position_embeddings", what)[0]
    for i in range(num_layers):
        for p in ("weight", "bias"):
            sat[f"transformer.layers.{i}.attention.query_key_value.{p}"] = torch.cat(
                [take(hf, f"layers.{i}.attention.{n}_proj.{p}", what) for n in "qkv"], dim=0)
    if sat_args.get("num_classes"):
        for p in ("weight", "bias"):
            sat[f"mixins.cls.classifier.{p}"] = take(hf, f"classifier.{p}", what)
    dropped = sorted(k for k in hf if k.startswith(("pooler.", "classifier.")))
    if dropped:
        logger.info("HF ViT -> sat_accel: dropped %s (no SAT counterpart)", ", ".join(dropped))
    warn_leftovers({k: v for k, v in hf.items() if k not in dropped}, "HF ViT")
    return sat
