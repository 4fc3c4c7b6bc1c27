"""Hugging Face RoBERTa -> sat_accel RobertaModel, through the BERT converter.

RoBERTa's weights are BERT's under other names (``roberta.``, ``lm_head.``). SAT's RobertaModel has no
token-type embedding; HF's adds its row 0 to every token, so that row is folded into the position table
(``position_embeddings[p] + token_type_embeddings[0]``: the same sum for every token, exactly).
"""
from __future__ import annotations

import logging

from ..errors import CheckpointError
from .hf_bert import hf_bert_config_to_args, hf_to_sat_bert

logger = logging.getLogger(__name__)

_HEAD = {"lm_head.dense.": "cls.predictions.transform.dense.", "lm_head.layer_norm.": "cls.predictions.transform.LayerNorm.",
         "lm_head.decoder.": "cls.predictions.decoder.", "lm_head.bias": "cls.predictions.bias"}
_TYPES = "mixins.bert-type.type_embeddings.weight"
_POSITIONS = "transformer.position_embeddings.weight"


def hf_roberta_config_to_args(hf_config: dict) -> dict:
    """HF ``config.json`` of a RoBERTa -> SAT args plus ``"model_class": "RobertaModel"``."""
    if hf_config.get("model_type") != "roberta":
        raise CheckpointError(f"HF config has model_type={hf_config.get('model_type')!r} but sat_accel's "
                              "RobertaModel converts only 'roberta'.")
    archs = [a.replace("Roberta", "Bert") for a in hf_config.get("architectures") or ["RobertaModel"]]
    args = hf_bert_config_to_args({**hf_config, "model_type": "bert", "architectures": archs})
    if hf_config.get("type_vocab_size", 1) > 1:
        logger.warning("HF RoBERTa config has type_vocab_size=%s: only token type 0 is kept (folded into the "
                       "positions); inputs with other token types will differ.", hf_config["type_vocab_size"])
    args.pop("num_types")
    pad = hf_config.get("pad_token_id")
    return {**args, "model_class": "RobertaModel", "pad_token_id": 1 if pad is None else pad}


def _bert_names(key: str) -> str:
    key = key[len("roberta."):] if key.startswith("roberta.") else key
    for old, new in _HEAD.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def hf_to_sat_roberta(hf_state_dict: dict, sat_args: dict) -> dict:
    """HF ``RobertaModel``/``RobertaForMaskedLM`` (or task-head) weights -> sat_accel RobertaModel state dict."""
    renamed = {_bert_names(k): v for k, v in hf_state_dict.items()}
    sat = hf_to_sat_bert(renamed, {**sat_args, "layernorm_order": "post"})
    types = sat.pop(_TYPES)
    sat[_POSITIONS] = sat[_POSITIONS] + types[0]
    return sat
