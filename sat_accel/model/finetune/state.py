"""Saving and loading only the weights that mixins add (a few MB instead of the whole model).

    save_file(mixin_state_dict(model), "adapter.safetensors")          # after training
    model, args = MyModel.from_pretrained("bert-base-uncased", args)   # the same base, mixins re-added
    load_mixin_state_dict(model, load_file("adapter.safetensors"))
"""
from __future__ import annotations

import torch

from ...errors import CheckpointError
from ..mixin_base import is_mixin_parameter


def mixin_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every ``mixins.*`` weight plus mixin parameters placed inside the trunk (LoRA's A/B matrices)."""
    inside = {name for name, p in model.named_parameters() if is_mixin_parameter(p)}
    return {k: v.detach() for k, v in model.state_dict().items() if k.startswith("mixins.") or k in inside}


def load_mixin_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by ``mixin_state_dict`` into a model built with the same mixins; the rest stays."""
    expected = model.state_dict()
    unknown = sorted(k for k in state if k not in expected)
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
           if k in expected and v.shape != expected[k].shape]
    if unknown or bad:
        raise CheckpointError(f"these mixin weights do not fit the model (unknown: {unknown[:5]}, shape: {bad[:5]}); "
                              "add the same mixins with the same sizes (and LoraMixin with reinit=True) first.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
