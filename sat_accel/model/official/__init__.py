"""Official models built on BaseModel, one file per family (SAT's names)."""
from .bert import BertClassificationModel, BertFinalMixin, BertModel, BertTypeMixin
from .gpt2_model import GPT2Model
from .llama_model import LLaMAModel, LMMixin, RMSNorm, RotaryMixin
from .roberta_model import RobertaModel
from .vit_model import ViTModel

__all__ = ["BertClassificationModel", "BertModel", "BertFinalMixin", "BertTypeMixin", "GPT2Model", "LLaMAModel",
           "LMMixin", "RMSNorm", "RobertaModel", "RotaryMixin", "ViTModel"]
