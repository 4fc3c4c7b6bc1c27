"""Models: BaseModel (hooks + mixins), the official families, mixins, the model registry and AutoModel."""
from .auto import AutoModel
from .base_model import BaseModel
from .mixins import BaseMixin, CachedAutoregressiveMixin, MLPHeadMixin, non_conflict, replacable
from .official import BertClassificationModel, BertModel, GPT2Model, LLaMAModel, RobertaModel, ViTModel
from .registry import get_model_class, register_model, registered_models, unregister_model

__all__ = [
    "AutoModel", "BaseModel", "BaseMixin", "BertClassificationModel", "BertModel", "CachedAutoregressiveMixin",
    "GPT2Model", "LLaMAModel", "MLPHeadMixin", "RobertaModel", "ViTModel", "non_conflict", "replacable",
    "get_model_class", "register_model", "registered_models", "unregister_model",
]
