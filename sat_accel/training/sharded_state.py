"""Training state of sharded engines, saved by the engine's own checkpoint code inside `training_state/`.

With DeepSpeed ZeRO every rank holds only its partition of the optimizer (and under ZeRO-3 of the weights);
with FSDP the optimizer state is a set of DTensor shards. Neither can go through a plain
`torch.save(optimizer.state_dict())` on the main process, so:

    <iteration>/training_state/deepspeed/   DeepSpeed's engine.save_checkpoint (tag "deepspeed"): every
                                            rank's ZeRO partition, its module-state file, DeepSpeed counters
    <iteration>/training_state/fsdp_optimizer/   torch.distributed.checkpoint (DCP) shards, via Accelerate

`model.safetensors` next to `training_state/` stays the consolidated model (checkpoint.full_state_dict);
scheduler, RNG, sampler position and args are saved by checkpoint.py as for DDP. Resume needs the same
world size and the same engine; the files are pickles written by DeepSpeed / DCP, read back by them.
Every function here is collective: call it on every rank.
"""
from __future__ import annotations

import copy
import itertools
import logging
import os

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

DEEPSPEED_DIR = "deepspeed"
FSDP_OPTIMIZER_DIR = "fsdp_optimizer"


def _kind(accelerator) -> str:
    return getattr(getattr(accelerator, "distributed_type", None), "value", "")


def is_sharded(accelerator) -> bool:
    """Whether this run's optimizer state is split across ranks (DeepSpeed ZeRO or FSDP)."""
    return _kind(accelerator) in ("DEEPSPEED", "FSDP")


def _engine(accelerator, model=None):
    """The DeepSpeed engine: the prepared model itself, or the one Accelerate keeps for backward()."""
    if model is not None and hasattr(model, "save_checkpoint"):
        return model
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if wrapped is None:
        raise CheckpointError("No DeepSpeed engine was prepared: call accelerator.prepare(model, optimizer) "
                              "before saving or loading the training state.")
    return wrapped.engine


def save_sharded_state(accelerator, model, optimizer, training_state_dir: str) -> list[str]:
    """Write this rank's share of the optimizer (and ZeRO-3 weights) under `training_state_dir`.
    Returns the folders written. Collective."""
    kind = _kind(accelerator)
    if kind == "DEEPSPEED":
        _engine(accelerator, model).save_checkpoint(training_state_dir, tag=DEEPSPEED_DIR, client_state={},
                                                    save_latest=False)
        return [os.path.join(training_state_dir, DEEPSPEED_DIR)]
    if kind == "FSDP":
        from accelerate.utils import save_fsdp_optimizer

        folder = os.path.join(training_state_dir, FSDP_OPTIMIZER_DIR)
        save_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, folder)
        return [folder]
    raise CheckpointError(f"No sharded training state for distributed type {kind or 'NO'}; "
                          "use checkpoint.save_checkpoint, which saves a plain optimizer.pt.")


def meta_skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose parameters and buffers live on the meta device (no memory): FSDP2 shards the
    model in place, so this is kept before wrapping to rebuild a plain module from at the end."""
    memo = {id(t): _same_kind(t, t.detach().to("meta")) for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)  # tied parameters stay tied: one memo entry per tensor object


def _same_kind(template: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` as a Parameter (with the template's requires_grad) where the template is one, else as is."""
    return torch.nn.Parameter(value, template.requires_grad) if isinstance(template, torch.nn.Parameter) else value


def unwrapped_full_model(accelerator, model, skeleton: torch.nn.Module | None = None):
    """The unwrapped model with full weights in every parameter, for training_main to return. Collective.

    Under ZeRO-3 `accelerator.unwrap_model` gives a module whose parameters are empty partitions; here they
    are gathered for good and the engine's hooks removed, so the module runs and saves like a plain one
    (the engine must not train any further). Under FSDP the weights are gathered into `skeleton` (from
    meta_skeleton, taken before wrapping) on every rank."""
    if _kind(accelerator) == "FSDP" and skeleton is not None:
        return _fsdp_full_model(model, skeleton)
    module = accelerator.unwrap_model(model)
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    engine = model if hasattr(model, "zero_optimization_partition_weights") else getattr(wrapped, "engine", None)
    if _kind(accelerator) != "DEEPSPEED" or engine is None or not engine.zero_optimization_partition_weights():
        return module  # nothing is partitioned (also: a model prepared for evaluation only)
    import deepspeed

    params = list(module.parameters())
    engine.destroy()  # removes ZeRO-3's fetch/release hooks from the module's layers
    for name in ("module_forward_pre_hook", "module_forward_post_hook"):  # the engine's own, on the module
        handle = getattr(engine, name, None)
        if handle is not None:
            handle.remove()
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        full = [p.data.detach().clone() for p in params]
        for sub in module.modules():
            # ZeRO-3 swapped each _parameters dict for one that all-gathers on access inside forward; a
            # plain dict again (while every parameter is available, so nothing is gathered) ends that.
            sub._parameters = dict(sub._parameters.items())
    for param, data in zip(params, full):
        param.data = data  # leaving the context re-partitioned them: put the full tensors back for good
    return module


def _fsdp_full_model(model: torch.nn.Module, skeleton: torch.nn.Module) -> torch.nn.Module:
    """Every rank all-gathers the FSDP2 shards and puts them into the plain skeleton; buffers, which FSDP
    does not shard (non-persistent ones included), are taken from the wrapped model as they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    buffers = dict(model.named_buffers())
    placed: dict[int, torch.Tensor] = {}  # one new tensor per skeleton tensor: ties survive
    for prefix, sub in skeleton.named_modules():
        for table, source in ((sub._parameters, full), (sub._buffers, buffers)):
            for name, tensor in list(table.items()):
                if tensor is None:
                    continue
                if id(tensor) not in placed:
                    placed[id(tensor)] = _same_kind(tensor, source[f"{prefix}.{name}" if prefix else name].detach())
                table[name] = placed[id(tensor)]
    skeleton.train(model.training)
    return skeleton


def has_sharded_state(training_state_dir: str) -> bool:
    return any(os.path.isdir(os.path.join(training_state_dir, d)) for d in (DEEPSPEED_DIR, FSDP_OPTIMIZER_DIR))


def load_sharded_state(accelerator, model, optimizer, training_state_dir: str) -> None:
    """Read back what save_sharded_state wrote, into the prepared model/optimizer. Collective."""
    kind = _kind(accelerator)
    deepspeed_dir = os.path.join(training_state_dir, DEEPSPEED_DIR)
    fsdp_dir = os.path.join(training_state_dir, FSDP_OPTIMIZER_DIR)
    if kind == "DEEPSPEED" and os.path.isdir(deepspeed_dir):
        path, _ = _engine(accelerator, model).load_checkpoint(
            training_state_dir, tag=DEEPSPEED_DIR, load_module_strict=True, load_optimizer_states=True,
            load_lr_scheduler_states=False)
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {deepspeed_dir} (saved with another world size or "
                                  "ZeRO stage?); resume with the same launch settings, or use --mode finetune.")
        return
    if kind == "FSDP" and os.path.isdir(fsdp_dir):
        if model is None:
            raise CheckpointError("Loading an FSDP training state needs the prepared model; pass model= to "
                                  "checkpoint.load_training_state.")
        from accelerate.utils import load_fsdp_optimizer

        load_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, fsdp_dir)
        return
    saved = DEEPSPEED_DIR if os.path.isdir(deepspeed_dir) else FSDP_OPTIMIZER_DIR
    raise CheckpointError(f"{training_state_dir} holds a {saved} training state but this run uses "
                          f"{kind or 'plain DDP'}: resume with the engine it was saved with, or use --mode finetune "
                          "(weights only).")
