"""AutoModel: build whatever class a checkpoint's model_config.json names (SAT's AutoModel)."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from .loading import from_pretrained


class AutoModel:
    """Picks the model class from `model_config.json["model_class"]` through the model registry.

    Every BaseModel subclass registers itself under its class name when it is defined, so a custom class
    only has to be imported before `AutoModel.from_pretrained` is called."""

    def __init__(self) -> None:
        raise TypeError("AutoModel is not instantiated; use AutoModel.from_pretrained(name, args=None, ...).")

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> tuple[torch.nn.Module, argparse.Namespace]:
        """`(name, args=None, ...)` or SAT's older `(args, name, ...)`; same options as
        BaseModel.from_pretrained (home_path, url, sha256, prefix, build_only, overwrite_args, ...)."""
        return from_pretrained(None, *args, **kwargs)
