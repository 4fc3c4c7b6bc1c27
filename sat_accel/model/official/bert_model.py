"""SAT's `sat.model.official.bert_model` path (re-export of official/bert.py)."""
from .bert import BertFinalMixin, BertModel, BertTypeMixin

__all__ = ["BertModel", "BertFinalMixin", "BertTypeMixin"]
