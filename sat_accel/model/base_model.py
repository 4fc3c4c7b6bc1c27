"""BaseModel: SAT's model contract (hooks + mixins) over BaseTransformer, built from ``args``.

    model = BaseModel(BaseModel.get_args(num_layers=2, hidden_size=64, num_attention_heads=4))
    logits, *outputs = model(input_ids=ids, position_ids=pos, attention_mask=mask)
"""
from __future__ import annotations

import argparse
import inspect
import logging
from functools import partial
from typing import Any, Iterable, Optional

import torch

from ..arguments import add_model_config_args
from ..errors import ConfigError
from ..sat_flags import UNBUILT_ARCH_FLAGS
from .mixins import BaseMixin, non_conflict, replacable  # noqa: F401 (SAT imports them from here)
from .registry import register_model
from .initialization import DEFAULT_INITIALIZER_RANGE, init_module_, output_projection_std
from .transformer import ARCH_DEFAULTS, HOOK_NAMES, HOOKS_DEFAULT, REQUIRED_ARCH, BaseTransformer

logger = logging.getLogger(__name__)

# Options read from args when present (training flags that shape the forward pass, not the weights).
RUNTIME_DEFAULTS = {"checkpoint_activations": False, "checkpoint_num_layers": 1, "checkpoint_skip_layers": 0}
# SAT constructor keywords that mean nothing without tensor model parallelism (accepted, ignored).
_MODEL_PARALLEL_ONLY_KWARGS = ("parallel_output",)


class BaseModel(torch.nn.Module):
    """A transformer whose pieces are named hooks that mixins override (see docs/models.md).

    ``forward(input_ids, position_ids=None, attention_mask=None, **kw)`` returns
    ``(logits, *per_layer_outputs)``. Keyword arguments given here override the values in ``args``.
    ``ARCH_DEFAULT_OVERRIDES`` holds a family's own architecture defaults (e.g. BERT's post-LN): they
    apply to ``cls.get_args()`` only, never to the caller's parser.

    Initialisation (docs/models.md): every trunk module goes through ``_init_weights(module, name)``
    (N(0, ``initializer_range``) weights, zero biases, unit norms; output projections scaled by
    1/sqrt(2L) when ``scale_output_init``); mixins initialise themselves in their constructors. Subclasses
    set the two class attributes, or override ``_init_weights`` for modules the rule does not know.
    """

    ARCH_DEFAULT_OVERRIDES: dict = {}
    initializer_range: float = DEFAULT_INITIALIZER_RANGE
    scale_output_init: bool = True  # SAT's rule; transformers' BERT does not scale
    # SAT architecture flags (sat_flags.UNBUILT_ARCH_FLAGS) this class implements itself, e.g. a family that
    # adds rotary embeddings as a mixin lists "is_rotary_emb"; any other non-default value is refused.
    HANDLED_SAT_ARCH_FLAGS: tuple = ()

    def __init__(self, args: argparse.Namespace, transformer: Optional[BaseTransformer] = None,
                 params_dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__()
        self.mixins = torch.nn.ModuleDict()
        self.params_dtype = params_dtype
        self._model_specific = self._read_model_specific(args)
        if transformer is not None:
            self.transformer = transformer  # shared trunk (e.g. encoder-decoder models)
        else:
            self._refuse_unbuilt_arch(args, kwargs)
            # Built uninitialised, then initialised once by this class's rule (unless --skip-init).
            self.transformer = BaseTransformer(**self._transformer_kwargs(args, kwargs),
                                               params_dtype=params_dtype, skip_init=True)
            if not getattr(args, "skip_init", False):
                self._init_trunk()
        self.collect_hooks_()

    @staticmethod
    def _transformer_kwargs(args: argparse.Namespace, overrides: dict) -> dict:
        missing = [n for n in REQUIRED_ARCH if n not in overrides and getattr(args, n, None) is None]
        if missing:
            raise ConfigError(f"args lack {', '.join(missing)}; build them with BaseModel.get_args(...) "
                              "or sat_accel.get_args(), or pass them as keyword arguments.")
        names = (*REQUIRED_ARCH, *ARCH_DEFAULTS, *RUNTIME_DEFAULTS)
        defaults = {**ARCH_DEFAULTS, **RUNTIME_DEFAULTS}
        kwargs = {n: getattr(args, n, defaults.get(n)) for n in names}
        for name in _MODEL_PARALLEL_ONLY_KWARGS:
            if overrides.pop(name, None) is not None:
                logger.debug("%s has no effect with model parallel size 1; ignored.", name)
        kwargs.update(overrides)  # explicit keyword arguments win over args (SAT raised instead)
        return kwargs

    @classmethod
    def _refuse_unbuilt_arch(cls, args: argparse.Namespace, overrides: dict) -> None:
        """SAT flags such as --is-rotary-emb parse, but a model that ignores them would train the wrong thing."""
        for name, default in UNBUILT_ARCH_FLAGS.items():
            value = overrides.get(name, getattr(args, name, default))
            if name in ARCH_DEFAULTS or name in cls.HANDLED_SAT_ARCH_FLAGS or value == default:
                continue
            raise ConfigError(f"--{name.replace('_', '-')} {value} is not built into {cls.__name__}; drop the flag "
                              "or use a model class that implements it (see docs/migrating_from_sat.md).")
        for name in UNBUILT_ARCH_FLAGS.keys() - ARCH_DEFAULTS.keys():
            overrides.pop(name, None)  # SAT constructor keywords the trunk does not take

    @classmethod
    def _read_model_specific(cls, args: argparse.Namespace) -> dict:
        defaults = vars(cls.add_model_specific_args(argparse.ArgumentParser()).parse_args([]))
        return {k: getattr(args, k, v) for k, v in defaults.items()
                if k not in ARCH_DEFAULTS and k not in REQUIRED_ARCH}

    # ------------------------------------------------------------ mixins and hooks
    def add_mixin(self, name: str, new_mixin: BaseMixin, reinit: bool = False) -> None:
        """Register ``new_mixin`` under ``mixins.<name>`` and re-resolve the hooks."""
        if not isinstance(new_mixin, BaseMixin):
            raise ConfigError(f"mixin {name!r} is a {type(new_mixin).__name__}; mixins must subclass BaseMixin.")
        if name in self.mixins:
            raise ConfigError(f"a mixin named {name!r} already exists; del_mixin({name!r}) first or pick another name.")
        if not name or "." in name or hasattr(self.mixins, name):
            raise ConfigError(f"mixin name {name!r} must be non-empty, contain no '.' and not be a "
                              "torch.nn.ModuleDict attribute (like 'double' or 'train'); pick another name.")
        self.mixins[name] = new_mixin
        object.__setattr__(new_mixin, "transformer", self.transformer)
        try:
            self.collect_hooks_()
        except ConfigError:
            del self.mixins[name]  # leave the model as it was
            self.collect_hooks_()
            raise
        if reinit:
            new_mixin.reinit(self)

    def del_mixin(self, name: str) -> Optional[BaseMixin]:
        """Remove the mixin ``name`` (its hooks and parameters) and return it; None when absent.

        Absent is not an error: SAT's finetune recipes call ``del_mixin('bert-final')`` also on BERT
        checkpoints that were converted without an MLM head.
        """
        if name not in self.mixins:
            logger.debug("del_mixin(%r): no such mixin, nothing to remove.", name)
            return None
        mixin = self.mixins[name]
        del self.mixins[name]
        self.collect_hooks_()
        return mixin

    def get_mixin(self, name: str) -> BaseMixin:
        """The mixin registered as ``name``."""
        if name not in self.mixins:
            raise ConfigError(f"no mixin named {name!r} (this model has: {', '.join(self.mixins) or 'none'}).")
        return self.mixins[name]

    # ------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module, name: str = "") -> list[str]:
        """Initialise ``module``'s own parameters (``name``: its path, for the output-projection rule);
        returns the names of parameters the rule does not know (see initialization.init_module_)."""
        std = self.initializer_range
        if self.scale_output_init:
            std = output_projection_std(name, std, self.transformer.num_layers)
        return init_module_(module, std)

    def _init_trunk(self) -> None:
        for name, module in self.transformer.named_modules():
            unknown = self._init_weights(module, name)
            if unknown:
                raise ConfigError(f"{type(self).__name__} has no init rule for the parameters {unknown} of "
                                  f"transformer.{name} ({type(module).__name__}); override _init_weights.")

    def init_weights(self) -> None:
        """Re-draw the trunk by ``_init_weights`` and call every mixin's ``reinit(model)`` (which re-draws
        the mixins that define one, e.g. BERT's and ``MLPHeadMixin``; SAT's default is a no-op)."""
        self._init_trunk()
        self.reinit()

    def reinit(self, mixin_names: Optional[Iterable[str]] = None) -> None:
        """Call ``reinit(self)`` on the named mixins (all when None), e.g. after a partial load."""
        names = list(self.mixins) if mixin_names is None else list(mixin_names)
        for name in names:
            self.get_mixin(name).reinit(self)

    def collect_hooks_(self) -> dict:
        """Resolve every hook from model methods and mixins (insertion order); see mixins.py."""
        hooks: dict = {}
        origins: dict = {}
        for name in HOOK_NAMES:
            if hasattr(self, name):
                hooks[name], origins[name] = getattr(self, name), "model"
            for mixin_name, mixin in self.mixins.items():
                if hasattr(mixin, name):
                    self._resolve_one(hooks, origins, name, mixin_name, getattr(mixin, name))
        self.hooks, self.hook_origins = hooks, origins
        if "transformer" in self._modules:
            self._sync_hooks()
        return hooks

    def _resolve_one(self, hooks: dict, origins: dict, name: str, mixin_name: str, method) -> None:
        if getattr(method, "non_conflict", False):
            if "old_impl" not in inspect.signature(method).parameters:
                raise ConfigError(f"hook {name} of mixin {mixin_name!r} is @non_conflict but has no "
                                  "old_impl parameter; add old_impl to its signature.")
            if name in hooks:
                old_impl = hooks[name]
            elif name == "attention_fn":  # the only hook without `self`
                old_impl = HOOKS_DEFAULT[name]
            else:
                old_impl = partial(HOOKS_DEFAULT[name], self)
            hooks[name] = partial(method, old_impl=old_impl)
            origins[name] = f"{mixin_name} -> {origins.get(name, 'default')}"
            return
        if name in hooks and not getattr(hooks[name], "replacable", False):
            raise ConfigError(
                f"hook {name} of mixin {mixin_name!r} conflicts with the one from {origins[name]!r}; "
                f"delete that mixin first (model.del_mixin(...)) or mark one hook "
                "@BaseMixin.non_conflict / @BaseMixin.replacable.")
        if name in hooks:
            logger.warning("hook %s of mixin %r replaces the replacable one from %r", name, mixin_name,
                           origins[name])
        hooks[name], origins[name] = method, mixin_name

    # ------------------------------------------------------------ forward
    def _sync_hooks(self) -> None:
        # The trunk may be shared by several models: install this model's hooks before running. Installed
        # when they change too, so that a compiled forward finds them in place (no dict mutation to trace, no
        # recompile after the first call).
        if self.transformer.hooks != self.hooks:
            self.transformer.hooks.clear()
            self.transformer.hooks.update(self.hooks)

    def forward(self, *args, **kwargs):
        """``(input_ids, position_ids=None, attention_mask=None, **kw)`` -> ``(logits, *outputs)``."""
        self._sync_hooks()
        return self.transformer(*args, **kwargs)

    def encode(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
               attention_mask=None, **kwargs) -> torch.Tensor:
        """Final hidden states ``[b, s, h]``: after the final layernorm, before ``final_forward``."""
        self._sync_hooks()
        return self.transformer(input_ids, position_ids, attention_mask, skip_final_forward=True, **kwargs)[0]

    def disable_untrainable_params(self) -> None:
        """Freeze parameters that should not train (subclasses override; training_main calls it)."""

    # ------------------------------------------------------------ args and configs
    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add this class's own flags to ``parser`` (subclasses add a group, then call super())."""
        return parser

    @classmethod
    def list_avail_args(cls, print: bool = False) -> argparse.ArgumentParser:  # noqa: A002 (SAT name)
        """Parser with the model-architecture flags plus this class's; ``print=True`` shows its help."""
        parser = argparse.ArgumentParser(prog=cls.__name__, add_help=False)
        add_model_config_args(parser)
        cls.add_model_specific_args(parser)
        parser.set_defaults(**cls.ARCH_DEFAULT_OVERRIDES)
        if print:
            parser.print_help()
        return parser

    @classmethod
    def get_args(cls, **overrides: Any) -> argparse.Namespace:
        """Default args of this model (no process group, no seeding), then ``overrides`` set on top."""
        args = cls.list_avail_args().parse_args([])
        for key, value in overrides.items():
            if not hasattr(args, key):
                logger.debug("get_args: %r is not a flag of %s; set anyway", key, cls.__name__)
            setattr(args, key, value)
        return args

    def get_model_config(self) -> dict:
        """What model_config.json stores: class name, architecture and model-specific args."""
        config = {"model_class": type(self).__name__, **self.transformer.arch}
        for key, value in self._model_specific.items():
            config.setdefault(key, value)
        return config

    @classmethod
    def merge_model_config(cls, config: dict, args: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        """New Namespace: ``cls.get_args()`` defaults, then ``args``, then ``config`` (config wins)."""
        merged = vars(cls.get_args())
        if args is not None:
            merged.update(vars(args))
        merged.update(config)
        return argparse.Namespace(**merged)

    @classmethod
    def from_model_config(cls, config: dict, args: Optional[argparse.Namespace] = None, **kwargs) -> "BaseModel":
        """Rebuild the architecture stored in ``config`` (weights are initialised, not loaded)."""
        return cls(cls.merge_model_config(config, args), **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load a pretrained model: see ``sat_accel.model.loading.from_pretrained``."""
        from .loading import from_pretrained
        return from_pretrained(cls, *args, **kwargs)

    @classmethod
    def from_pretrained_base(cls, *args, **kwargs):
        """SAT alias of ``from_pretrained``."""
        from .loading import from_pretrained
        return from_pretrained(cls, *args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_model(cls)


register_model(BaseModel)
