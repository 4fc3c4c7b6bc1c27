"""Hugging Face BERT <-> sat_accel BertModel: pure functions over configs and state dicts.

What differs between the two layouts:

* HF keeps q, k, v apart; SAT concatenates them into ``query_key_value`` as ``[q | k | v]``.
* SAT's post-LN layer normalises at its START, so every HF LayerNorm moves one step:
  ``embeddings.LayerNorm`` -> ``layers.0.input_layernorm``, ``layer.i.output.LayerNorm`` ->
  ``layers.{i+1}.input_layernorm`` (``final_layernorm`` for the last layer), while
  ``layer.i.attention.output.LayerNorm`` -> ``layers.i.post_attention_layernorm``.
* Token types and the MLM head are mixins (``mixins.bert-type.``, ``mixins.bert-final.``);
  HF ties the MLM decoder to the word embeddings, SAT keeps its own copy.
* The pooler, next-sentence and task heads have no SAT counterpart: they are dropped (logged).
"""
from __future__ import annotations

import argparse
import logging
from typing import Iterator, Union

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

SUPPORTED_HF_ARCHITECTURES = frozenset({
    "BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice",
    "BertForNextSentencePrediction",
})
# HF keys without a SAT counterpart: the SAT BertModel has no pooler and no task heads.
DROPPED_PREFIXES = ("pooler.", "cls.seq_relationship.", "classifier.", "qa_outputs.")
_IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_TYPES = "mixins.bert-type.type_embeddings.weight"
_HEAD = "mixins.bert-final.lm_head."
_QKV = ("query", "key", "value")
SatArgs = Union[dict, argparse.Namespace]


def _as_dict(sat_args: SatArgs) -> dict:
    return vars(sat_args) if isinstance(sat_args, argparse.Namespace) else dict(sat_args)


def hf_bert_config_to_args(hf_config: dict) -> dict:
    """HF ``config.json`` dict -> SAT args (underscore names) plus ``"model_class": "BertModel"``."""
    archs = hf_config.get("architectures") or ["BertModel"]
    checks = {
        "model_type": (hf_config.get("model_type", "bert") == "bert", "a BERT config (model_type 'bert')"),
        "architectures": (all(a in SUPPORTED_HF_ARCHITECTURES for a in archs),
                          f"one of {sorted(SUPPORTED_HF_ARCHITECTURES)}"),
        "hidden_act": (hf_config.get("hidden_act", "gelu") == "gelu", "'gelu' (exact GELU)"),
        "position_embedding_type": (hf_config.get("position_embedding_type", "absolute") == "absolute",
                                    "'absolute'"),
        "is_decoder": (not hf_config.get("is_decoder", False), "false (encoder only)"),
    }
    for key, (ok, wanted) in checks.items():
        if not ok:
            raise CheckpointError(f"HF config has {key}={hf_config.get(key)!r} but sat_accel's BertModel "
                                  f"converts only {wanted}; use transformers directly for this model.")
    try:
        return {
            "model_class": "BertModel",
            "num_layers": hf_config["num_hidden_layers"],
            "hidden_size": hf_config["hidden_size"],
            "num_attention_heads": hf_config["num_attention_heads"],
            "vocab_size": hf_config["vocab_size"],
            "max_sequence_length": hf_config["max_position_embeddings"],
            "layernorm_order": "post",
            "inner_hidden_size": hf_config.get("intermediate_size", 4 * hf_config["hidden_size"]),
            "hidden_size_per_attention_head": None,
            "layernorm_epsilon": hf_config.get("layer_norm_eps", 1e-12),
            "hidden_dropout": hf_config.get("hidden_dropout_prob", 0.1),
            "attention_dropout": hf_config.get("attention_probs_dropout_prob", 0.1),
            "num_types": hf_config.get("type_vocab_size", 2),
        }
    except KeyError as err:
        raise CheckpointError(f"HF BERT config lacks {err.args[0]!r}; pass the model's full config.json.") from None


def sat_args_to_hf_bert_config(sat_args: SatArgs) -> dict:
    """SAT args of a BertModel (dict or Namespace) -> an HF ``BertConfig`` dict (``BertConfig(**result)``)."""
    sat_args = _check_sat_args(sat_args)
    hidden = sat_args["hidden_size"]
    return {
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_act": "gelu",
        "num_hidden_layers": sat_args["num_layers"], "hidden_size": hidden,
        "num_attention_heads": sat_args["num_attention_heads"], "vocab_size": sat_args["vocab_size"],
        "max_position_embeddings": sat_args["max_sequence_length"],
        "intermediate_size": sat_args.get("inner_hidden_size") or 4 * hidden,
        "layer_norm_eps": sat_args.get("layernorm_epsilon", 1e-12),
        "hidden_dropout_prob": sat_args.get("hidden_dropout", 0.1),
        "attention_probs_dropout_prob": sat_args.get("attention_dropout", 0.1),
        "type_vocab_size": sat_args.get("num_types", 2),
        "tie_word_embeddings": False,  # SAT's MLM decoder is its own weight
    }


def _check_sat_args(sat_args: SatArgs) -> dict:
    sat_args = _as_dict(sat_args)
    if sat_args.get("layernorm_order", "post") != "post":
        raise CheckpointError(f"BERT conversion needs layernorm_order 'post', got {sat_args['layernorm_order']!r}.")
    head_size = sat_args.get("hidden_size_per_attention_head")
    if head_size and head_size * sat_args["num_attention_heads"] != sat_args["hidden_size"]:
        raise CheckpointError(f"hidden_size_per_attention_head={head_size} x heads != hidden_size; "
                              "HF BERT cannot represent this model.")
    return sat_args


def _pairs(num_layers: int) -> Iterator[tuple[str, str]]:
    """(sat key, hf key) for every 1:1 tensor of the trunk (q/k/v and the MLM head excluded)."""
    yield "transformer.word_embeddings.weight", "embeddings.word_embeddings.weight"
    yield "transformer.position_embeddings.weight", "embeddings.position_embeddings.weight"
    yield _TYPES, "embeddings.token_type_embeddings.weight"
    for p in ("weight", "bias"):
        yield f"transformer.layers.0.input_layernorm.{p}", f"embeddings.LayerNorm.{p}"
    for i in range(num_layers):
        sat, hf = f"transformer.layers.{i}.", f"encoder.layer.{i}."
        next_ln = (f"transformer.layers.{i + 1}.input_layernorm" if i + 1 < num_layers
                   else "transformer.final_layernorm")
        for p in ("weight", "bias"):
            yield f"{sat}attention.dense.{p}", f"{hf}attention.output.dense.{p}"
            yield f"{sat}post_attention_layernorm.{p}", f"{hf}attention.output.LayerNorm.{p}"
            yield f"{sat}mlp.dense_h_to_4h.{p}", f"{hf}intermediate.dense.{p}"
            yield f"{sat}mlp.dense_4h_to_h.{p}", f"{hf}output.dense.{p}"
            yield f"{next_ln}.{p}", f"{hf}output.LayerNorm.{p}"


def _head_pairs() -> Iterator[tuple[str, str]]:
    for p in ("weight", "bias"):
        yield f"{_HEAD}dense.{p}", f"cls.predictions.transform.dense.{p}"
        yield f"{_HEAD}layer_norm.{p}", f"cls.predictions.transform.LayerNorm.{p}"


def _normalise_hf_keys(hf_state_dict: dict) -> dict:
    """Strip the ``bert.`` prefix, rename ``LayerNorm.gamma/beta``, drop position/type id buffers."""
    out = {}
    for key, value in hf_state_dict.items():
        key = key[len("bert."):] if key.startswith("bert.") else key
        if ".LayerNorm." in key or key.startswith("LayerNorm."):
            key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
        if key not in _IGNORED_BUFFERS:
            out[key] = value
    return out


def _take(state: dict, key: str, from_sat: bool = False) -> torch.Tensor:
    """Pop `key`, or say which weight is missing and what to check."""
    try:
        return state.pop(key)
    except KeyError:
        what = ("sat_accel BERT weights", "is this a BertModel state dict with the num_layers given in its args?") \
            if from_sat else ("HF BERT weights", "is this a BERT checkpoint with the layer count given in the config?")
        raise CheckpointError(f"{what[0]} lack {key!r}; {what[1]}") from None


def _hf_layer_count(hf: dict) -> int:
    ids = {int(k.split(".")[2]) for k in hf if k.startswith("encoder.layer.")}
    return max(ids) + 1 if ids else 0


def _convert_head(hf: dict, sat: dict) -> None:
    """MLM head: transform + decoder (HF ties it to the word embeddings; SAT keeps a copy)."""
    for sat_key, hf_key in _head_pairs():
        sat[sat_key] = _take(hf, hf_key)
    decoder = hf.pop("cls.predictions.decoder.weight", None)
    if decoder is None:
        decoder = sat["transformer.word_embeddings.weight"]
    sat[f"{_HEAD}decoder.weight"] = decoder.clone()  # own storage: safetensors refuses shared tensors
    bias = hf.pop("cls.predictions.bias", None)
    decoder_bias = hf.pop("cls.predictions.decoder.bias", None)
    bias = bias if bias is not None else decoder_bias
    if bias is None:
        raise CheckpointError("HF BERT weights have an MLM head but no 'cls.predictions.bias'; "
                              "the checkpoint looks truncated.")
    sat[f"{_HEAD}decoder.bias"] = bias


def hf_to_sat_bert(hf_state_dict: dict, sat_args: SatArgs) -> dict:
    """HF BERT weights (any ``BertFor*`` or ``BertModel``) -> sat_accel BertModel state dict.

    ``sat_args`` (dict or Namespace) is what ``hf_bert_config_to_args`` returned (``num_layers`` matters).
    Without an HF MLM head the result has no ``mixins.bert-final.*`` keys (the loader re-initialises
    that mixin in finetune mode). Pooler / NSP / task-head weights are dropped with a log line.
    """
    sat_args = _check_sat_args(sat_args)
    hf = _normalise_hf_keys(hf_state_dict)
    num_layers = sat_args["num_layers"]
    if _hf_layer_count(hf) != num_layers:
        raise CheckpointError(f"HF weights have {_hf_layer_count(hf)} layers but the config says "
                              f"num_layers={num_layers}; pass the config.json that belongs to these weights.")
    sat = {sat_key: _take(hf, hf_key) for sat_key, hf_key in _pairs(num_layers)}
    for i in range(num_layers):
        prefix = f"encoder.layer.{i}.attention.self."
        for p in ("weight", "bias"):
            sat[f"transformer.layers.{i}.attention.query_key_value.{p}"] = torch.cat(
                [_take(hf, f"{prefix}{name}.{p}") for name in _QKV], dim=0)
    if any(k.startswith("cls.predictions.") for k in hf):
        _convert_head(hf, sat)
    dropped = sorted(k for k in hf if k.startswith(DROPPED_PREFIXES))
    if dropped:
        logger.info("HF BERT -> sat_accel: dropped %d weights with no SAT counterpart (pooler, next-"
                    "sentence or task heads): %s", len(dropped), ", ".join(dropped))
    unknown = sorted(set(hf) - set(dropped))
    if unknown:
        logger.warning("HF BERT -> sat_accel: ignored %d unrecognised weights: %s", len(unknown), ", ".join(unknown))
    return sat


def sat_to_hf_bert(sat_state_dict: dict, sat_args: SatArgs) -> dict:
    """sat_accel BertModel state dict -> HF weights.

    With the MLM head (``mixins.bert-final.*``) the keys are ``BertForMaskedLM``'s (``bert.`` prefix,
    ``cls.predictions.*``); without it they are ``BertModel``'s (no pooler: HF initialises it).
    Other mixins (e.g. a classification head) are skipped with a log line.
    """
    sat_args = _check_sat_args(sat_args)
    sat = dict(sat_state_dict)
    num_layers = sat_args["num_layers"]
    heads = {}
    if f"{_HEAD}decoder.weight" in sat:
        heads = {hf_key: _take(sat, sat_key, from_sat=True) for sat_key, hf_key in _head_pairs()}
        decoder = _take(sat, f"{_HEAD}decoder.weight", from_sat=True)
        bias = _take(sat, f"{_HEAD}decoder.bias", from_sat=True)
        heads.update({"cls.predictions.decoder.weight": decoder, "cls.predictions.bias": bias,
                      "cls.predictions.decoder.bias": bias.clone()})
        if not torch.equal(decoder, sat["transformer.word_embeddings.weight"]):
            logger.info("sat_accel -> HF BERT: the MLM decoder differs from the word embeddings; load it "
                        "with tie_word_embeddings=False (as sat_args_to_hf_bert_config sets) to keep both.")
    trunk = {hf_key: _take(sat, sat_key, from_sat=True) for sat_key, hf_key in _pairs(num_layers)}
    for i in range(num_layers):
        qkv = {p: _take(sat, f"transformer.layers.{i}.attention.query_key_value.{p}", from_sat=True)
               for p in ("weight", "bias")}
        for p, tensor in qkv.items():
            for name, part in zip(_QKV, tensor.chunk(3, dim=0)):
                trunk[f"encoder.layer.{i}.attention.self.{name}.{p}"] = part.clone()
    if sat:
        logger.info("sat_accel -> HF BERT: skipped %d weights with no HF BertModel counterpart: %s",
                    len(sat), ", ".join(sorted(sat)))
    if not heads:
        return trunk
    return {**{f"bert.{k}": v for k, v in trunk.items()}, **heads}


