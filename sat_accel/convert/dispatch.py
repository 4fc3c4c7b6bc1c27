"""Hugging Face checkpoint -> sat_accel checkpoint, picking the converter from config.json's ``model_type``.

Each family converter is a pair of pure functions: ``config.json`` dict -> SAT args (with
``model_class``), and HF state dict + those args -> SAT state dict.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..errors import CheckpointError
from . import hf_bert, hf_gpt2, hf_llama, hf_roberta, hf_vit


class Family(NamedTuple):
    config_to_args: Callable[[dict], dict]
    to_sat: Callable[[dict, dict], dict]
    extra_config: Callable[[dict], dict] = lambda state: {}


def _bert_extras(state: dict) -> dict:
    # A headless checkpoint (HF BertModel) has no MLM head: record it so that loading, also in inference
    # mode, builds the model without one instead of reporting its weights missing.
    return {"mlm_head": any(key.startswith("mixins.bert-final.") for key in state)}


FAMILIES: dict[str, Family] = {
    "bert": Family(hf_bert.hf_bert_config_to_args, hf_bert.hf_to_sat_bert, _bert_extras),
    "roberta": Family(hf_roberta.hf_roberta_config_to_args, hf_roberta.hf_to_sat_roberta, _bert_extras),
    "vit": Family(hf_vit.hf_vit_config_to_args, hf_vit.hf_to_sat_vit),
    "gpt2": Family(hf_gpt2.hf_gpt2_config_to_args, hf_gpt2.hf_to_sat_gpt2),
    **{t: Family(hf_llama.hf_llama_config_to_args, hf_llama.hf_to_sat_llama) for t in hf_llama.MODEL_TYPES},
}


def supported_model_types() -> list[str]:
    """The ``model_type`` values of config.json that sat_accel converts."""
    return sorted(FAMILIES)


def family_of(hf_config: dict) -> Family:
    """The converter for this ``config.json``; an unsupported ``model_type`` raises CheckpointError."""
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(f"config.json has model_type {model_type!r}, which sat_accel cannot convert; "
                              f"supported model types: {', '.join(supported_model_types())}.")
    return FAMILIES[model_type]


def hf_to_sat_checkpoint(hf_config: dict, hf_state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(model_config.json dict, SAT state dict) for an HF ``config.json`` dict and its weights."""
    family = family_of(hf_config)
    args = family.config_to_args(hf_config)
    state = family.to_sat(hf_state, args)
    return {**args, **family.extra_config(state)}, state
