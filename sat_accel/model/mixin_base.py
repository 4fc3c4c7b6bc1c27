"""Mixins: small modules that add parameters under ``mixins.<name>.`` and override named hooks.

A mixin defines methods named like hooks (``final_forward``, ``attention_fn``, ...). When it is
added to a model, ``BaseModel.collect_hooks_`` resolves them:

* plain hook: it becomes the hook; a second mixin claiming the same hook is an error,
  unless the first one is marked ``@BaseMixin.replacable`` (then the later one replaces it);
* ``@BaseMixin.non_conflict`` hook: it wraps whatever was there before and receives it as
  ``old_impl`` (so several such mixins stack, e.g. prefix tuning on top of a custom attention).

Inside a hook, ``self.transformer`` is the model's BaseTransformer (set by ``add_mixin``).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError
from .initialization import DEFAULT_INITIALIZER_RANGE, init_module_


def non_conflict(func: Callable) -> Callable:
    """Mark a mixin hook as a wrapper: it gets the previous implementation as ``old_impl``."""
    func.non_conflict = True
    return func


def replacable(func: Callable) -> Callable:
    """Mark a hook as replaceable by a mixin added after it (with a logged warning)."""
    func.replacable = True
    return func


class BaseMixin(torch.nn.Module):
    """Base class of every mixin; subclasses define parameters and hook methods."""

    non_conflict = staticmethod(non_conflict)
    replacable = staticmethod(replacable)

    def reinit(self, parent_model: torch.nn.Module | None = None) -> None:
        """(Re)initialise this mixin's parameters; the default does nothing (as in SAT).

        Called by ``add_mixin(..., reinit=True)`` and by the loader for mixins whose weights the
        checkpoint lacks (finetune mode). A mixin whose constructor already initialises its weights
        needs nothing more; override it when a load must restore a specific init (``AdapterMixin``)
        or when the mixin rewires the model (``LoraMixin``). ``parent_model`` is the model.
        """

    @torch.no_grad()
    def init_submodules_(self, std: float = DEFAULT_INITIALIZER_RANGE) -> None:
        """Initialise every parameter of this mixin by the library's rule (initialization.py): N(0, std)
        Linear/Embedding weights (padding row 0), zero biases, unit norms. For constructors and ``reinit``;
        a raw ``nn.Parameter`` (no rule) raises ConfigError: initialise it yourself."""
        for name, module in self.named_modules():
            unknown = init_module_(module, std)
            if unknown:
                raise ConfigError(f"{type(self).__name__} has parameters {unknown} in {name or 'itself'} "
                                  f"({type(module).__name__}) that init_submodules_ has no rule for; "
                                  "initialise them in the constructor instead.")


class RuleInitMixin(BaseMixin):
    """A mixin initialised by the library's rule with the model's ``initializer_range``: a subclass builds
    its modules after ``super().__init__(init_std)`` and then calls ``self.init_submodules_(init_std)``;
    ``reinit(model)`` (finetune loads lacking its weights) re-draws them with ``model.initializer_range``."""

    def __init__(self, init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__()
        self.init_std = init_std

    def reinit(self, parent_model: torch.nn.Module | None = None) -> None:
        """Re-draw every parameter: N(0, the model's initializer_range) weights, zero biases, unit norms."""
        self.init_submodules_(getattr(parent_model, "initializer_range", self.init_std))


_MIXIN_PARAMETER = "sat_accel_mixin_parameter"


def mark_mixin_parameter(param: torch.nn.Parameter) -> torch.nn.Parameter:
    """Mark a parameter that a mixin placed inside the trunk (e.g. LoRA's matrices): the loader accepts it as
    missing in finetune mode and ``mixin_state_dict`` saves it."""
    setattr(param, _MIXIN_PARAMETER, True)
    return param


def is_mixin_parameter(param: torch.Tensor) -> bool:
    """True for parameters marked by ``mark_mixin_parameter``."""
    return bool(getattr(param, _MIXIN_PARAMETER, False))
