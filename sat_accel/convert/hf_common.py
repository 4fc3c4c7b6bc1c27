"""Helpers shared by the Hugging Face converters: config checks and key bookkeeping with clear errors."""
from __future__ import annotations

import logging
from typing import Iterator

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)


def check_hf_config(hf_config: dict, sat_class: str, checks: dict) -> None:
    """``checks``: key -> (ok, what is supported); the first failing one raises CheckpointError."""
    for key, (ok, wanted) in checks.items():
        if not ok:
            raise CheckpointError(f"HF config has {key}={hf_config.get(key)!r} but sat_accel's {sat_class} "
                                  f"converts only {wanted}; use transformers directly for this model.")


def require(hf_config: dict, key: str):
    """``hf_config[key]`` or a CheckpointError naming the missing key."""
    if key not in hf_config:
        raise CheckpointError(f"HF config lacks {key!r}; pass the model's full config.json.")
    return hf_config[key]


def take(state: dict, key: str, what: str) -> torch.Tensor:
    """Pop ``key`` from ``state``, or say which weight is missing."""
    try:
        return state.pop(key)
    except KeyError:
        raise CheckpointError(f"{what} lack {key!r}; is this the checkpoint that belongs to the config "
                              "(same family and layer count)?") from None


def check_layer_count(state: dict, prefix: str, index_at: int, num_layers: int, family: str) -> None:
    """The layer ids under ``prefix`` (at dotted position ``index_at``) must be 0 .. num_layers - 1."""
    ids = {int(k.split(".")[index_at]) for k in state if k.startswith(prefix)}
    found = max(ids) + 1 if ids else 0
    if found != num_layers:
        raise CheckpointError(f"HF {family} weights have {found} layers but the config says num_layers="
                              f"{num_layers}; pass the config.json that belongs to these weights.")


def warn_leftovers(state: dict, what: str) -> None:
    """Log weights no rule consumed (they are not converted)."""
    if state:
        logger.warning("%s: ignored %d unrecognised weights: %s", what, len(state), ", ".join(sorted(state)[:20]))


def layer_pairs(num_layers: int, hf_layer: str, names: dict[str, str],
                params: tuple[str, ...] = ("weight", "bias")) -> Iterator[tuple[str, str]]:
    """(sat key, hf key) of every layer's 1:1 tensors: ``names`` maps a sat module path inside
    ``transformer.layers.{i}`` to its HF path inside ``{hf_layer}{i}``, for each of ``params``."""
    for i in range(num_layers):
        for sat_name, hf_name in names.items():
            for p in params:
                yield f"transformer.layers.{i}.{sat_name}.{p}", f"{hf_layer}{i}.{hf_name}.{p}"
