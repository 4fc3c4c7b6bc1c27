"""Converted weights against the sizes config.json declares, checked BEFORE a folder is written.

A config.json that disagrees with its weights (edited, or taken from another model size) would otherwise give
a converted folder that cannot load, or, where the shapes happen to agree, a model that computes garbage.
Every trunk tensor of the SAT layout has a shape that follows from the config: the first disagreement is
reported naming the tensor, its shape and the config.json keys (with their values) that imply another one.
"""
from __future__ import annotations

import re
from typing import Iterator

import torch

from ..errors import CheckpointError

# config.json's names for the SAT sizes, where the family calls them otherwise (shown in error messages).
_HF_NAMES = {
    "default": {"num_layers": "num_hidden_layers", "max_sequence_length": "max_position_embeddings",
                "inner_hidden_size": "intermediate_size", "hidden_size_per_attention_head": "head_dim",
                "num_multi_query_heads": "num_key_value_heads", "num_types": "type_vocab_size"},
    "gpt2": {"num_layers": "n_layer", "hidden_size": "n_embd", "num_attention_heads": "n_head",
             "max_sequence_length": "n_positions", "inner_hidden_size": "n_inner"},
}
Dim = tuple[int, tuple[str, ...]]  # expected size, and the SAT config keys it follows from


def check_shapes_fit_config(config: dict, state: dict[str, torch.Tensor], src: str, hf_config: dict) -> None:
    """Raise CheckpointError when a converted tensor's shape or the layer count disagrees with `config`
    (the SAT args converted from `hf_config`, whose names and values the message shows)."""
    names = {**_HF_NAMES["default"], **_HF_NAMES.get(hf_config.get("model_type", ""), {})}

    def shown(keys: tuple[str, ...]) -> str:
        pairs = [(names.get(k, k), k) for k in keys]
        return ", ".join(f"{hf}={hf_config[hf] if hf in hf_config else config.get(k)}" for hf, k in pairs
                         if hf in hf_config or config.get(k))

    layers = config.get("num_layers")
    found = {int(m.group(1)) for key in state if (m := re.match(r"transformer\.layers\.(\d+)\.", key))}
    if isinstance(layers, int) and found and len(found) != layers:
        raise CheckpointError(f"{src}/config.json says {shown(('num_layers',))} but the weights hold {len(found)} "
                              "layers; use the config.json that came with these weights.")
    for key, dims in _expected(config, sorted(found)):
        tensor = state.get(key)
        if tensor is None or tuple(tensor.shape) == tuple(size for size, _ in dims):
            continue
        culprits = tuple(dict.fromkeys(k for (size, keys), actual in zip(dims, (*tensor.shape, None))
                                       if size != actual for k in keys))
        raise CheckpointError(f"{src}/config.json does not match its weights: {key} has shape {tuple(tensor.shape)}"
                              f" but {shown(culprits)} implies {tuple(size for size, _ in dims)}; use the "
                              "config.json that came with these weights.")


def _expected(config: dict, layer_ids: list[int]) -> Iterator[tuple[str, tuple[Dim, ...]]]:
    """(SAT tensor name, expected dims) for every trunk tensor whose shape follows from `config`."""
    if not isinstance(config.get("hidden_size"), int) or not isinstance(config.get("num_attention_heads"), int):
        return
    h: Dim = (config["hidden_size"], ("hidden_size",))
    heads = config["num_attention_heads"]
    head_dim = config.get("hidden_size_per_attention_head") or h[0] // heads
    head_keys = ("num_attention_heads",
                 "hidden_size_per_attention_head" if config.get("hidden_size_per_attention_head") else "hidden_size")
    kv_heads = config.get("num_multi_query_heads") or heads
    inner: Dim = (config.get("inner_hidden_size") or 4 * h[0], ("inner_hidden_size",))
    if isinstance(config.get("vocab_size"), int):
        yield "transformer.word_embeddings.weight", ((config["vocab_size"], ("vocab_size",)), h)
    if isinstance(config.get("max_sequence_length"), int) and not config.get("is_rotary_emb"):
        yield "transformer.position_embeddings.weight", ((config["max_sequence_length"], ("max_sequence_length",)), h)
    if isinstance(config.get("num_types"), int):
        yield "mixins.bert-type.type_embeddings.weight", ((config["num_types"], ("num_types",)), h)
    qkv: Dim = ((heads + 2 * kv_heads) * head_dim, head_keys + ("num_multi_query_heads",))
    for i in layer_ids:
        layer = f"transformer.layers.{i}."
        yield f"{layer}attention.query_key_value.weight", (qkv, h)
        yield f"{layer}attention.dense.weight", (h, (heads * head_dim, head_keys))
        yield f"{layer}mlp.dense_h_to_4h.weight", (inner, h)
        yield f"{layer}mlp.dense_h_to_4h_gate.weight", (inner, h)
        yield f"{layer}mlp.dense_4h_to_h.weight", (h, inner)
        yield f"{layer}input_layernorm.weight", (h,)
