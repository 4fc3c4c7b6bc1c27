"""Official models built on BaseModel."""
from .bert import BertFinalMixin, BertModel, BertTypeMixin

__all__ = ["BertModel", "BertFinalMixin", "BertTypeMixin"]
