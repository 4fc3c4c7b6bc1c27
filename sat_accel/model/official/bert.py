"""BERT in SAT's layout: post-LN BaseModel + token types (mixin 'bert-type') + MLM head ('bert-final').

    logits, *_ = model(input_ids=ids, position_ids=None, attention_mask=mask[:, None, None, :],
                       token_type_ids=types)      # logits: [b, s, vocab] from the MLM head

Finetune idiom (SAT): ``model.del_mixin('bert-final');
model.add_mixin('classification_head', MLPHeadMixin(args.hidden_size, 2048, 1))`` -> logits [b, s, 1].
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..base_model import BaseModel
from ..initialization import DEFAULT_INITIALIZER_RANGE
from ..mixin_base import RuleInitMixin
from ..mixins import MLPHeadMixin
from ..transformer import BaseTransformer


class BertLMHead(torch.nn.Module):
    """dense -> exact GELU -> LayerNorm -> decoder (own weight, not tied, as in SAT)."""

    def __init__(self, vocab_size: int, hidden_size: int, layernorm_epsilon: float, dtype: torch.dtype):
        super().__init__()
        self.dense = torch.nn.Linear(hidden_size, hidden_size, dtype=dtype)
        self.layer_norm = torch.nn.LayerNorm(hidden_size, eps=layernorm_epsilon, dtype=dtype)
        self.decoder = torch.nn.Linear(hidden_size, vocab_size, dtype=dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(hidden_states))))


class BertFinalMixin(RuleInitMixin):
    """MLM head as ``final_forward``: ``[b, s, h] -> [b, s, vocab]``."""

    def __init__(self, vocab_size: int, hidden_size: int, layernorm_epsilon: float = 1e-12,
                 dtype: torch.dtype = torch.float32, init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__(init_std)
        self.lm_head = BertLMHead(vocab_size, hidden_size, layernorm_epsilon, dtype)
        self.init_submodules_(init_std)

    def final_forward(self, logits: torch.Tensor, **kw_args) -> torch.Tensor:
        return self.lm_head(logits)


class BertTypeMixin(RuleInitMixin):
    """Adds token-type embeddings to the word embeddings; makes ``token_type_ids`` a required input."""

    def __init__(self, num_types: int, hidden_size: int, dtype: torch.dtype = torch.float32,
                 init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__(init_std)
        # N(0, 0.02) like the word embeddings; nn.Embedding's N(0, 1) drowns the tokens after the
        # first layernorm and a from-scratch BERT then cannot learn.
        self.type_embeddings = torch.nn.Embedding(num_types, hidden_size, dtype=dtype)
        self.init_submodules_(init_std)

    def word_embedding_forward(self, input_ids: torch.Tensor, **kw_args) -> torch.Tensor:
        token_type_ids = kw_args.get("token_type_ids")
        if token_type_ids is None:
            raise ConfigError(
                "BertModel needs token_type_ids ([b, s] ints: 0 = first segment, 1 = second); pass "
                "token_type_ids=torch.zeros_like(input_ids) for single-segment input.")
        return self.transformer.word_embeddings(input_ids) + self.type_embeddings(token_type_ids)


class BertModel(BaseModel):
    """SAT's BERT: exact-GELU post-LN encoder with the 'bert-type' and 'bert-final' mixins.

    ``BertModel.get_args()`` defaults to ``layernorm_order='post'`` and ``layernorm_epsilon=1e-12``
    (BERT's values); args from the command line keep whatever they say. Initialised as transformers'
    BERT: every Linear/Embedding weight N(0, 0.02) (output projections not scaled), zero biases, unit
    layernorms, token-type embeddings and MLM head included.
    """

    ARCH_DEFAULT_OVERRIDES = {"layernorm_order": "post", "layernorm_epsilon": 1e-12}
    scale_output_init = False

    def __init__(self, args: argparse.Namespace, transformer: Optional[BaseTransformer] = None,
                 params_dtype: torch.dtype = torch.float32, **kwargs):
        kwargs.setdefault("activation_func", F.gelu)  # exact erf GELU, as HF's "gelu"
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        arch = self.transformer.arch
        num_types = self._model_specific.get("num_types") or 2
        if self._model_specific.get("mlm_head", True):  # False for headless checkpoints (HF BertModel)
            self.add_mixin("bert-final", BertFinalMixin(arch["vocab_size"], arch["hidden_size"],
                                                        arch["layernorm_epsilon"], dtype=params_dtype,
                                                        init_std=self.initializer_range))
        self.add_mixin("bert-type", BertTypeMixin(num_types, arch["hidden_size"], dtype=params_dtype,
                                                  init_std=self.initializer_range))

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """``--num-types`` (token-type vocabulary, default 2) and ``--no-mlm-head``."""
        group = parser.add_argument_group("BERT", "BERT configuration")
        group.add_argument("--num-types", type=int, default=2, help="number of token types (segments)")
        group.add_argument("--no-mlm-head", dest="mlm_head", action="store_false",
                           help="build without the 'bert-final' MLM head (headless checkpoints such as HF BertModel)")
        return super().add_model_specific_args(parser)


class BertClassificationModel(BertModel):
    """SAT's finetune classifier as a library class: BertModel whose MLM head is replaced by
    ``MLPHeadMixin(hidden, *head_sizes)`` (mixin 'classification_head'); logits ``[b, s, head_sizes[-1]]``,
    the [CLS] row (position 0) being the answer. The head's sizes and init are model_config.json fields, so
    ``AutoModel.from_pretrained`` rebuilds a trained classifier with no user code imported."""

    def __init__(self, args: argparse.Namespace, transformer: Optional[BaseTransformer] = None, **kwargs):
        super().__init__(args, transformer=transformer, **kwargs)
        if "bert-final" in self.mixins:
            self.del_mixin("bert-final")
        specific = self._model_specific
        self.add_mixin("classification_head", MLPHeadMixin(self.transformer.arch["hidden_size"],
                                                           *specific["head_sizes"],
                                                           init_std=specific["head_init_std"]))

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """``--head-sizes`` (MLP sizes after the hidden size, default SAT's ``2048 1``), ``--head-init-std``."""
        group = parser.add_argument_group("BERT classification", "classification head configuration")
        group.add_argument("--head-sizes", type=int, nargs="+", default=[2048, 1],
                           help="classification MLP sizes after the hidden size; the last is the number of outputs")
        group.add_argument("--head-init-std", type=float, default=0.005,
                           help="std of the head's weights (SAT's 0.005)")
        return super().add_model_specific_args(parser)
