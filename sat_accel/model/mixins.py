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
import torch.nn.functional as F

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


class MLPHeadMixin(BaseMixin):
    """Replaces ``final_forward`` with an MLP over every position: ``[b, s, h] -> [b, s, sizes[-1]]``.

    ``MLPHeadMixin(hidden, 2048, 1)`` = Linear(h, 2048) -> activation -> Linear(2048, 1), weights
    drawn from N(init_mean, init_std) and zero biases (SAT's finetune head).
    """

    def __init__(self, hidden_size: int, *output_sizes: int, bias: bool = True,
                 activation_func: Callable = F.relu, init_mean: float = 0.0, init_std: float = 0.005):
        super().__init__()
        self.activation_func = activation_func
        self.init_mean, self.init_std = init_mean, init_std
        sizes = (hidden_size, *output_sizes)
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(n_in, n_out, bias=bias) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.reinit()

    def reinit(self, parent_model: torch.nn.Module | None = None) -> None:
        """Weights ~ N(init_mean, init_std), biases 0."""
        for layer in self.layers:
            torch.nn.init.normal_(layer.weight, mean=self.init_mean, std=self.init_std)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)

    def final_forward(self, logits: torch.Tensor, **kw_args) -> torch.Tensor:
        """Apply the MLP to the final hidden states (all positions)."""
        for i, layer in enumerate(self.layers):
            if i > 0:
                logits = self.activation_func(logits)
            logits = layer(logits)
        return logits


class CachedAutoregressiveMixin(BaseMixin):
    """KV cache for incremental decoding (SAT's): one generation step costs one token's forward.

    Wraps ``attention_fn``: it records this step's (rotary-applied, detached) keys and values as
    ``output_this_layer['mem_kv']`` ``[b, s, 2 * nkv * d]`` (per position: K heads, then V heads) and,
    when ``mems`` ``[layers, b, cached, 2 * nkv * d]`` is passed to the model, attends over the cached
    positions followed by the new ones. The caller passes absolute ``position_ids`` and a mask of
    shape ``[..., s, cached + s]``; ``filling_sequence`` does both.
    """

    @non_conflict
    def attention_fn(self, q, k, v, mask, dropout_fn, mems=None, cross_attention=False, old_impl=None, **kw):
        if not cross_attention:
            b, nkv, s, d = k.shape
            # [2, b, nkv, s, d] -> [b, s, 2, nkv, d] -> [b, s, 2 * nkv * d]
            kw["output_this_layer"]["mem_kv"] = torch.stack((k, v)).permute(1, 3, 0, 2, 4).reshape(
                b, s, 2 * nkv * d).detach()
            if mems is not None:
                mem = mems[kw["layer_id"]]
                mem_k, mem_v = mem.view(mem.shape[0], mem.shape[1], 2, nkv, d).permute(2, 0, 3, 1, 4)
                k = torch.cat((mem_k.expand(b, -1, -1, -1), k), dim=2)
                v = torch.cat((mem_v.expand(b, -1, -1, -1), v), dim=2)
        return old_impl(q, k, v, mask, dropout_fn, cross_attention=cross_attention, mems=mems, **kw)
