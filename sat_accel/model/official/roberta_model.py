"""RoBERTa in SAT's layout: BertModel without token types ('bert-type' removed), MLM head 'bert-final'.

    logits, *_ = model(input_ids, position_ids=None, attention_mask=mask[:, None, None, :])

With ``position_ids=None`` positions are computed as transformers' RoBERTa does: padding tokens
(``pad_token_id``, default 1) get ``pad_token_id`` and real tokens count up from ``pad_token_id + 1``.
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch

from .bert import BertModel


def roberta_position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """``[b, s]`` positions: ``pad_token_id`` on padding, ``pad_token_id + 1, + 2, ...`` on real tokens."""
    real = input_ids.ne(pad_token_id).long()
    return real.cumsum(dim=1) * real + pad_token_id


class RobertaModel(BertModel):
    """SAT's RobertaModel: post-LN BERT trunk and MLM head, no token types, RoBERTa's position ids."""

    def __init__(self, args: argparse.Namespace, transformer=None, params_dtype: torch.dtype = torch.float32,
                 **kwargs):
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        self.del_mixin("bert-type")
        pad = self._model_specific.get("pad_token_id")
        self.pad_token_id = 1 if pad is None else pad

    def _positions(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor]) -> torch.Tensor:
        return roberta_position_ids(input_ids, self.pad_token_id) if position_ids is None else position_ids

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None, attention_mask=None,
                **kwargs):
        """``(input_ids, position_ids=None, attention_mask=None, **kw)`` -> ``(logits, *outputs)``."""
        return super().forward(input_ids, self._positions(input_ids, position_ids), attention_mask, **kwargs)

    def encode(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None, attention_mask=None,
               **kwargs) -> torch.Tensor:
        """Final hidden states ``[b, s, h]`` (positions as in ``forward``)."""
        return super().encode(input_ids, self._positions(input_ids, position_ids), attention_mask, **kwargs)

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """``--pad-token-id`` (RoBERTa's padding id, also the position offset; default 1)."""
        group = parser.add_argument_group("RoBERTa", "RoBERTa configuration")
        known = {s for action in parser._actions for s in action.option_strings}
        if "--pad-token-id" not in known:
            group.add_argument("--pad-token-id", type=int, default=1, help="padding token id (position offset)")
        return super().add_model_specific_args(parser)
