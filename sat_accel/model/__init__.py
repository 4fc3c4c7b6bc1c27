"""Models: BaseModel (hooks + mixins), BertModel, mixins, the model registry and AutoModel."""
from .auto import AutoModel
from .base_model import BaseModel
from .mixins import BaseMixin, MLPHeadMixin, non_conflict, replacable
from .official import BertModel
from .registry import get_model_class, register_model, registered_models, unregister_model

__all__ = [
    "AutoModel", "BaseModel", "BaseMixin", "BertModel", "MLPHeadMixin",
    "non_conflict", "replacable", "get_model_class", "register_model", "registered_models",
    "unregister_model",
]
