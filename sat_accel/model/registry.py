"""Model registry: ``model_config.json["model_class"]`` -> class, so AutoModel can rebuild a model.

Every BaseModel subclass registers itself under its class name when it is defined
(``BaseModel.__init_subclass__``); ``register_model`` also works as a decorator for other names.
"""
from __future__ import annotations

import logging
from typing import Optional

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type] = {}


def register_model(cls: type, name: Optional[str] = None) -> type:
    """Register ``cls`` under ``name`` (default: its class name) and return it (decorator-friendly).

    Registering the same class object again is silent; a different class under a taken name
    replaces the old one with a warning (a notebook cell re-run redefines classes, so the newest wins).
    """
    key = name or cls.__name__
    old = _REGISTRY.get(key)
    if old is not None and old is not cls:
        logger.warning(
            "model class name %r was registered by %s.%s and is now replaced by %s.%s",
            key, old.__module__, old.__qualname__, cls.__module__, cls.__qualname__,
        )
    _REGISTRY[key] = cls
    return cls


def get_model_class(name: str) -> type:
    """Return the class registered under ``name``; unknown names raise CheckpointError."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CheckpointError(
            f"model_class {name!r} is not registered (known: {', '.join(registered_models())}); "
            "import the module that defines it before loading."
        ) from None


def registered_models() -> list[str]:
    """Sorted names of every registered model class."""
    return sorted(_REGISTRY)


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (no error when absent); mostly for tests."""
    _REGISTRY.pop(name, None)
