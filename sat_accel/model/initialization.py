"""Weight initialisation: the one rule every model class and mixin applies to its parameters.

``init_module_(module, std)`` initialises the parameters a module owns directly (not its children):

* ``Linear``: weight ~ N(0, std), bias = 0;
* ``Embedding``: weight ~ N(0, std), the ``padding_idx`` row (if any) = 0;
* normalisation layers (``LayerNorm``, ``RMSNorm``, ``GroupNorm``, batch norms): weight = 1, bias = 0;
* any other module with a ``reset_parameters`` method (e.g. a custom RMSNorm): that method, its own rule.

That is transformers' ``initializer_range`` scheme (BERT's ``_init_weights``; RoBERTa, GPT-2 and LLaMA
use the same rule). ``BaseModel._init_weights`` applies it with the model's ``initializer_range``; SAT's scaled output
projections (std / sqrt(2 * num_layers)) are on top when the class sets ``scale_output_init``. A module
with parameters of another kind returns their names so the caller can say that it needs its own rule.
"""
from __future__ import annotations

import math

import torch

DEFAULT_INITIALIZER_RANGE = 0.02
# Modules whose own parameters are a scale (weight) and a shift (bias).
NORM_TYPES: tuple[type, ...] = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase,
                                *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()))


@torch.no_grad()
def init_module_(module: torch.nn.Module, std: float = DEFAULT_INITIALIZER_RANGE) -> list[str]:
    """Initialise ``module``'s own parameters by the rule above; returns the names it does not know."""
    own = dict(module.named_parameters(recurse=False))
    if not own:
        return []
    if isinstance(module, torch.nn.Linear):
        torch.nn.init.normal_(module.weight, 0.0, std)
        _zero(module.bias)
    elif isinstance(module, torch.nn.Embedding):
        torch.nn.init.normal_(module.weight, 0.0, std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, NORM_TYPES):
        if getattr(module, "weight", None) is not None:
            torch.nn.init.ones_(module.weight)
        _zero(getattr(module, "bias", None))
    elif callable(getattr(module, "reset_parameters", None)):  # a module with its own rule (e.g. an RMSNorm)
        module.reset_parameters()
    else:
        return sorted(own)
    return []


def _zero(tensor) -> None:
    if tensor is not None:
        torch.nn.init.zeros_(tensor)


# SAT/Megatron (and GPT-2) scale the projections that write into the residual stream by 1/sqrt(2L).
OUTPUT_PROJECTIONS = ("attention.dense", "mlp.dense_4h_to_h")


def output_projection_std(name: str, std: float, num_layers: int) -> float:
    """``std / sqrt(2 * num_layers)`` for a residual output projection (by module name), else ``std``."""
    return std / math.sqrt(2.0 * num_layers) if name.endswith(OUTPUT_PROJECTIONS) else std
