"""Reading checkpoint folders into models, and `from_pretrained` (docs/checkpoints.md, "from_pretrained").

Weights are read through safetensors' mmap (zero-copy, lazy); `from_pretrained` builds the model on the
meta device and assigns those tensors directly, so loading costs neither a random init nor a copy.
The file layout and its readers belong to sat_accel/checkpoint_format.py; this module puts what they read
into a model.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..checkpoint_format import read_model_config, read_weights, resolve_config_paths, resolve_load_dir
from ..errors import CheckpointError
from ..hub import resolve_model_folder
from .config_checks import check_sizes_fit_weights
from .mixin_base import is_mixin_parameter
from .registry import get_model_class, registered_models

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- state dict -> model
def tied_names(model: torch.nn.Module) -> dict[str, str]:
    """alias -> first name, for parameters/buffers that are the same object under several names."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, prefix: str = "",
                     tied: dict[str, str] | None = None, source: str = "checkpoint"):
    """Filter by prefix and fill tied aliases (`tied` = file's and model's alias maps) -> (state, expected,
    missing, unexpected); shape mismatches raise, naming every key and both shapes."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"No weight in {source} starts with prefix {prefix!r}; check the prefix "
                                  "(e.g. 'encoder.') against the checkpoint's key names.")
    else:
        state = dict(state)
    expected = model.state_dict()
    for alias, kept in (tied or {}).items():
        if alias not in state and kept in state:
            state[alias] = state[kept]
        elif kept not in state and alias in state:
            state[kept] = state[alias]
    bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    bad += [f"{k}: checkpoint {state[k].dtype} vs model {v.dtype}" for k, v in expected.items()
            if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    if bad:
        raise CheckpointError(f"{source} does not fit this model ({len(bad)} shape or dtype mismatches: "
                              f"{'; '.join(bad[:10])}); load a checkpoint of the same architecture or fix "
                              "model_config.json.")
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    return state, expected, missing, unexpected


def _mixins_to_reinit(model: torch.nn.Module, missing: list[str], mode: str, source: str) -> list[str]:
    """SAT's rule: in finetune mode only mixin (or cross-attention) weights may be absent; mixin parameters
    inside the trunk (LoRA's matrices) too, and they keep the init their mixin gave them."""
    if not missing:
        return []
    params = dict(model.named_parameters())
    allowed = mode == "finetune" and all(k.startswith("mixins.") or "cross_attention" in k
                                         or is_mixin_parameter(params.get(k)) for k in missing)
    if not allowed:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CheckpointError(f"{source} lacks {len(missing)} weights the model needs ({shown}) in mode "
                              f"{mode!r}; use mode 'finetune' when they belong to new mixins, otherwise load "
                              "a checkpoint that matches the model.")
    return sorted({k.split(".")[1] for k in missing if k.startswith("mixins.")})


def load_state_dict_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, mode: str = "inference",
                         prefix: str = "", tied: dict[str, str] | None = None, assign: bool = False,
                         source: str = "checkpoint") -> list[str]:
    """Apply the missing/unexpected-key rules of docs/checkpoints.md and load; returns the mixins that were
    re-initialised (finetune)."""
    ties = tied_names(model)
    state, expected, missing, unexpected = match_state_dict(model, state, prefix=prefix, source=source,
                                                            tied={**(tied or {}), **ties})
    if unexpected:
        logger.warning("Ignoring %d weights of %s that the model does not have: %s", len(unexpected), source,
                       ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    reinit = _mixins_to_reinit(model, missing, mode, source)
    state = {k: _cast(v, expected[k].dtype) for k, v in state.items() if k in expected}
    if assign:
        _unshare(state, ties)
    model.load_state_dict(state, strict=False, assign=assign)
    if assign:  # assign gives every name its own Parameter: point aliases back at one object
        for alias, kept in ties.items():
            owner, _, attr = alias.rpartition(".")
            setattr(model.get_submodule(owner), attr, _get(model, kept))
    for name in reinit:
        mixin = model.mixins[name]  # type: ignore[index]
        if hasattr(mixin, "reinit"):
            mixin.reinit(model)
        logger.info("Mixin %r was not in %s: re-initialised for finetuning.", name, source)
    return reinit


def _unshare(state: dict[str, torch.Tensor], ties: dict[str, str]) -> None:
    """Tensors tied in the file but not in the model (e.g. HF's tied decoder) must not share storage once
    assigned, or an optimizer step on one parameter would silently change the other."""
    seen: set[int] = set()
    for key, tensor in state.items():
        if key in ties or not tensor.numel():
            continue
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            state[key] = tensor.clone()
        seen.add(ptr)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.dtype != dtype and tensor.is_floating_point() else tensor


def _get(model: torch.nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(owner), attr)


# ---------------------------------------------------------------- from_pretrained
_OPTIONS = ("home_path", "url", "prefix", "build_only", "overwrite_args", "specific_iteration",
            "load_iteration", "sha256", "size", "use_node_group")
# Facts about the process that loads, never about the model: a checkpoint's value for them is ignored.
_RUNTIME_KEYS = ("device", "rank", "world_size", "local_rank", "cuda", "mode", "fp16", "bf16", "half_weights",
                 "skip_init", "use_gpu_initialization")
# Architecture sizes model_config.json may set; each must be a non-negative integer.
_SIZE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_sequence_length",
              "inner_hidden_size", "hidden_size_per_attention_head", "num_multi_query_heads")


def from_pretrained(model_cls: type | None, *args: Any, **kwargs: Any) -> tuple[torch.nn.Module, argparse.Namespace]:
    """Build `model_cls` (None: the class named in model_config.json) and load a checkpoint -> (model, args).

    Accepts `(args, name)` and `(name, args=None)`; options home_path, url, sha256, size (byte count of the
    url's download), prefix, build_only, overwrite_args, specific_iteration/load_iteration; other keywords go
    to the model constructor."""
    name, user_args, opts = _parse_call(args, kwargs)
    folder = resolve_model_folder(name, home_path=opts.get("home_path"), url=opts.get("url"),
                                  sha256=opts.get("sha256"), size=opts.get("size"))
    iteration = opts.get("specific_iteration", opts.get("load_iteration",
                                                        getattr(user_args, "load_iteration", None)))
    iteration_dir, _ = resolve_load_dir(folder, iteration)
    config = checked_model_config(read_model_config(iteration_dir), folder, opts.get("overwrite_args") or {})
    if config.get("library") == "transformers" and model_cls is None:
        return _from_transformers(config["model_class"], iteration_dir, user_args)
    model_cls = _pick_class(model_cls, config, iteration_dir)
    config = resolve_tokenizer_type(config, iteration_dir, folder)
    merged = _merge_args(model_cls, user_args, config, opts.get("overwrite_args") or {}, folder)
    mode = getattr(merged, "mode", None) or "inference"
    if opts.get("build_only"):
        model = _construct(model_cls, merged, kwargs)
    else:
        model = _build_and_load(model_cls, merged, kwargs, iteration_dir, mode, opts.get("prefix", ""))
    if mode == "inference":
        model.eval()
    device = getattr(merged, "device", None)
    if device not in (None, "cpu"):
        model.to(device)
    return model, merged


def checked_model_config(config: dict, folder: str, overwrite: dict) -> dict:
    """model_config.json without runtime keys, its `*_path` values inside the checkpoint folder (unless
    overwrite_args replaces them) and its sizes non-negative integers; otherwise one CheckpointError."""
    ignored = sorted(k for k in _RUNTIME_KEYS if k in config)
    if ignored:
        logger.warning("model_config.json of %s sets %s (how the loading process runs, not what the model is): "
                       "ignored.", folder, ", ".join(ignored))
    config = {k: v for k, v in config.items() if k not in _RUNTIME_KEYS}
    for key, value in config.items():
        if key.endswith("_path") and isinstance(value, str) and key not in overwrite:
            if os.path.isabs(value) or ".." in value.replace("\\", "/").split("/"):
                raise CheckpointError(f"model_config.json of {folder} sets {key}={value!r}, a path outside the "
                                      f"checkpoint folder; a checkpoint may only refer to its own files — pass "
                                      f"overwrite_args={{{key!r}: ...}} if you trust it.")
        if key in _SIZE_KEYS and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                         or value < 0):
            raise CheckpointError(f"model_config.json of {folder} sets {key}={value!r}; it must be a non-negative "
                                  "integer — the file is damaged, restore it from the run that wrote it.")
    return config


def _from_transformers(class_name: str, iteration_dir: str, user_args: argparse.Namespace | None):
    """A checkpoint of a transformers model (config.json beside the weights): rebuilt by transformers itself."""
    import transformers

    model_cls = getattr(transformers, class_name, None)
    if model_cls is None:
        raise CheckpointError(f"{iteration_dir} holds a transformers {class_name}, which this transformers version "
                              f"does not have; load it with the transformers class that trained it.")
    args = argparse.Namespace(**vars(user_args)) if user_args is not None else argparse.Namespace()
    model = model_cls.from_pretrained(iteration_dir)
    if (getattr(args, "mode", None) or "inference") == "inference":
        model.eval()
    return model, args


def _parse_call(positional: tuple, kwargs: dict) -> tuple[str, argparse.Namespace | None, dict]:
    """Tell SAT's two call orders apart by type: a Namespace is args, a str/path is the name."""
    name, args = kwargs.pop("name", None), kwargs.pop("args", None)
    if len(positional) > 2:
        raise TypeError(f"from_pretrained takes (name, args) or (args, name), got {len(positional)} positionals")
    for value in positional:
        if isinstance(value, argparse.Namespace):
            args = value
        elif isinstance(value, (str, os.PathLike)):
            name = os.fspath(value)
        elif value is not None:
            raise TypeError(f"from_pretrained got {type(value).__name__} where a model name or an "
                            "argparse.Namespace belongs; call from_pretrained(name, args) or (args, name).")
    if not name:
        raise CheckpointError("from_pretrained needs a model name or folder, e.g. "
                              "from_pretrained('bert-base-uncased', args).")
    return name, args, {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}


def _pick_class(model_cls: type | None, config: dict, where: str) -> type:
    if model_cls is not None:
        return model_cls
    class_name = config.get("model_class")
    known = sorted(registered_models())
    if not class_name:
        raise CheckpointError(f"{where} has no model_config.json with a model_class, so AutoModel cannot "
                              "pick a class; call <YourModel>.from_pretrained instead.")
    if class_name not in known:
        raise CheckpointError(f"model_config.json of {where} names model_class {class_name!r}, which is not "
                              f"registered (registered: {', '.join(known) or 'none'}); import the module that "
                              "defines it before calling AutoModel.from_pretrained.")
    return get_model_class(class_name)


def resolve_tokenizer_type(config: dict, *folders: str) -> dict:
    """A relative ``tokenizer_type`` that names a tokenizer stored inside the checkpoint (training writes
    ``tokenizer/``) becomes that absolute path; names such as ``bert-base-uncased`` stay as they are."""
    value = config.get("tokenizer_type")
    if not isinstance(value, str) or os.path.isabs(value):
        return config
    for folder in folders:
        candidate = os.path.join(folder, value)
        if os.path.exists(candidate):
            return {**config, "tokenizer_type": candidate}
    return config


def _merge_args(model_cls: type, user_args: argparse.Namespace | None, config: dict, overwrite: dict,
                folder: str) -> argparse.Namespace:
    """Model defaults < caller's args < model_config.json < overwrite_args, as a NEW Namespace."""
    config = resolve_config_paths(config, folder)  # SAT: paths in model_config.json are folder-relative
    given = vars(user_args) if user_args is not None else {}
    replaced = sorted(k for k in config if k in given and given[k] != config[k] and k != "model_class")
    if replaced:
        logger.info("model_config.json of %s sets %s (your values are replaced; use overwrite_args to "
                    "change them).", folder, ", ".join(f"{k}={config[k]!r}" for k in replaced))
    if hasattr(model_cls, "merge_model_config"):
        merged = model_cls.merge_model_config(config, user_args)
    else:
        merged = argparse.Namespace(**{**given, **config})
    for key, value in overwrite.items():
        setattr(merged, key, value)
    return merged


def _construct(model_cls: type, args: argparse.Namespace, kwargs: dict, skip_init: bool | None = None):
    if skip_init is not None:
        args = argparse.Namespace(**{**vars(args), "skip_init": skip_init})
    kwargs = dict(kwargs)
    if "params_dtype" not in kwargs:
        kwargs["params_dtype"] = build_dtype(args)
    return model_cls(args, **kwargs)


def build_dtype(args: argparse.Namespace) -> torch.dtype:
    """fp16/bf16 when --fp16/--bf16 asks for it in --mode inference or with --half-weights; else fp32.

    Training keeps fp32 master weights (training_main), so a model loaded for training is built in fp32:
    its weights are then exact copies of the checkpoint's, not bf16 roundings of them."""
    half = torch.float16 if getattr(args, "fp16", False) else torch.bfloat16 if getattr(args, "bf16", False) else None
    if half is not None and (getattr(args, "mode", None) == "inference" or getattr(args, "half_weights", False)):
        return half
    return torch.float32


def _build_and_load(model_cls: type, args: argparse.Namespace, kwargs: dict, iteration_dir: str, mode: str,
                    prefix: str) -> torch.nn.Module:
    """Meta-device build + assign from the mmap when every weight is in the checkpoint; else a real build."""
    state, tied = read_weights(iteration_dir)
    if hasattr(model_cls, "merge_model_config"):  # a BaseModel: its trunk's size follows from args
        check_sizes_fit_weights(args, state, iteration_dir)
    try:
        with torch.device("meta"), _NoInitOnMeta():  # no skip_init: its to_empty() is wasted work on meta
            model = _construct(model_cls, args, kwargs, skip_init=False)
    except Exception as e:  # a model that cannot be built on meta still loads, only slower
        logger.debug("Meta-device build of %s failed (%s); building on CPU.", model_cls.__name__, e)
        model, missing = None, None
    else:
        _, _, missing, _ = match_state_dict(model, state, prefix=prefix, tied={**tied, **tied_names(model)},
                                         source=iteration_dir)
        if not missing:
            load_state_dict_into(model, state, mode=mode, prefix=prefix, tied=tied, assign=True,
                                 source=iteration_dir)
            if not _has_meta_tensors(model):
                return model
            logger.debug("%s keeps tensors outside its state dict; building on CPU.", model_cls.__name__)
    # skip_init leaves only the trunk uninitialised (mixins always initialise), so it is safe whenever
    # nothing outside `mixins.` is missing; those missing mixins are re-initialised by the loader.
    trunk_complete = missing is not None and all(k.startswith("mixins.") for k in missing)
    model = _construct(model_cls, args, kwargs, skip_init=True if trunk_complete else None)
    load_state_dict_into(model, state, mode=mode, prefix=prefix, tied=tied, source=iteration_dir)
    return model


class _NoInitOnMeta(TorchFunctionMode):
    """Skip value initialisers on meta tensors: they are no-ops there, but meta `normal_` runs a Python
    decomposition whose first call imports torch._dynamo (~1.5 s per process)."""

    _INITIALISERS = frozenset({"normal_", "uniform_", "trunc_normal_", "fill_", "zero_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self._INITIALISERS:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def _has_meta_tensors(model: torch.nn.Module) -> bool:
    """Non-persistent buffers or plain tensor attributes made under the meta device have no values."""
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False),
                   *(v for v in vars(module).values() if isinstance(v, torch.Tensor))]
        if any(t.is_meta for t in tensors):
            return True
    return False
