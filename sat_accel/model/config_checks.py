"""A checkpoint's model_config.json against its weights, before a model is built (docs/checkpoints.md,
"Loading and conversion checks").

model_config.json comes with the weights, possibly from a stranger, and may describe a model far bigger than
the weights beside it (`num_layers: 1000000000` would otherwise build for minutes before failing). The trunk
of a BaseModel has a parameter count that follows from a few sizes; a config whose minimum exceeds every
weight the checkpoint holds is refused, naming the size key that explains the gap.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from ..errors import CheckpointError

# The sizes the estimate reads, in the order a culprit is looked for (hidden_size last: at 1 it shrinks the
# whole trunk, so it explains any gap and is named only when no other single size does).
_SIZE_KEYS = ("num_layers", "inner_hidden_size", "hidden_size_per_attention_head", "vocab_size",
              "num_attention_heads", "hidden_size")


def trunk_parameter_floor(sizes: dict[str, Any]) -> int | None:
    """A lower bound on the parameters of a BaseTransformer with these sizes (word embeddings; per layer the
    query part of query_key_value, the attention output and two MLP matrices); None when a size is not a
    positive integer (the constructor then reports it)."""
    needed = ("num_layers", "hidden_size", "num_attention_heads", "vocab_size")
    if not all(_positive_int(sizes.get(k)) for k in needed):
        return None
    h, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    head_dim = sizes.get("hidden_size_per_attention_head") or h // heads
    inner = sizes.get("inner_hidden_size") or 4 * h
    if not (_positive_int(head_dim) and _positive_int(inner)):
        return None
    return sizes["vocab_size"] * h + sizes["num_layers"] * (2 * h * heads * head_dim + 2 * h * inner)


def check_sizes_fit_weights(args: argparse.Namespace, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, before building, sizes whose trunk needs more parameters than the checkpoint holds."""
    sizes = {k: getattr(args, k, None) for k in _SIZE_KEYS}
    floor = trunk_parameter_floor(sizes)
    present = sum(t.numel() for t in state.values())
    if floor is None or floor <= present:
        return
    culprits = [k for k in _SIZE_KEYS if sizes[k] and _fits(_shrunk(sizes, k), present)]
    named = culprits[:1] or [k for k in _SIZE_KEYS if sizes[k]]
    raise CheckpointError(
        f"model_config.json of {where} sets {', '.join(f'{k}={sizes[k]!r}' for k in named)}, a model of at "
        f"least {floor:,} parameters, but the checkpoint holds only {present:,} weights; fix model_config.json "
        "to match the weights (or pass overwrite_args={...}) — nothing was built.")


def _shrunk(sizes: dict[str, Any], key: str) -> dict[str, Any]:
    """`sizes` with `key` at its smallest value (derived sizes fall back to hidden_size's rule)."""
    if key in ("inner_hidden_size", "hidden_size_per_attention_head"):
        return {**sizes, key: None}
    if key == "hidden_size":
        return {**sizes, key: 1, "num_attention_heads": 1, "hidden_size_per_attention_head": None}
    return {**sizes, key: 1}


def _fits(sizes: dict[str, Any], present: int) -> bool:
    floor = trunk_parameter_floor(sizes)
    return floor is not None and floor <= present


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
