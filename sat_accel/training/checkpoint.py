"""Crash-safe training checkpoints (docs/checkpoints.md): safetensors weights, full training state, retention, resume.

A save writes everything into `<run>/.tmp-<iteration>/`, fsyncs it, renames it to `<run>/<iteration>/` and
only then replaces `latest` (write + fsync + rename). A crash at any moment therefore leaves `latest`
naming a complete folder. Older folders are removed (`--save-total-limit`) only after that.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
from typing import Any

import numpy as np
import torch

from ..checkpoint_format import (ARGS_FILE, HF_CONFIG, LATEST, MODEL_CONFIG, OLD_PREFIX, OPTIMIZER, SCALER, SCHEDULER,
                                 TMP_PREFIX, TRAINER_STATE, TRAINING_STATE, atomic_write_text, durable_rename,
                                 fsync_path, fsync_tree, is_iteration_dir, parse_size, read_json, read_weights,
                                 resolve_load_dir, safe_torch_load, save_model_folder, save_torch, write_json,
                                 write_weights)
from ..errors import CheckpointError
from ..model.loading import load_state_dict_into
from . import sharded_state
from .tokenizer_files import tokenizer_entry, write_tokenizer

logger = logging.getLogger(__name__)

# resolve_load_dir, write_weights, save_model_folder and parse_size are re-exported from checkpoint_format.
__all__ = ["full_state_dict", "save_checkpoint", "resolve_load_dir", "load_model_weights",
           "load_training_state", "write_weights", "save_model_folder", "apply_retention", "parse_size"]

TRANSFORMERS = "transformers"  # model_config.json "library" of a transformers model (config.json beside the weights)


# ---------------------------------------------------------------- weights
def full_state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Consolidated CPU state dict of the unwrapped model on the main process (DDP/DeepSpeed/FSDP seam).

    Collective: every rank must call it (ZeRO-3/FSDP gather shards); other ranks get {}."""
    if accelerator is None:
        state, main = model.state_dict(), True
    else:
        state, main = accelerator.get_state_dict(model, unwrap=True), accelerator.is_main_process
    return {k: v.detach().cpu() for k, v in state.items()} if main else {}


def model_config_of(model: torch.nn.Module, args: argparse.Namespace | None) -> dict[str, Any]:
    """model_config.json content: the model's own get_model_config(); for any other module only what is true
    of it, its class name (and, for a transformers model, that its config.json lies beside the weights)."""
    if hasattr(model, "get_model_config"):
        return dict(model.get_model_config())
    config: dict[str, Any] = {"model_class": type(model).__name__}
    if transformers_config_of(model) is not None:
        config["library"] = TRANSFORMERS
    return config


def transformers_config_of(model: torch.nn.Module) -> dict[str, Any] | None:
    """A transformers model's config.json content (so the checkpoint reloads with transformers alone), else None."""
    hf_config = getattr(model, "config", None)
    if not (hasattr(model, "save_pretrained") and hasattr(hf_config, "to_json_string")):
        return None
    return {**json.loads(hf_config.to_json_string()), "architectures": [type(model).__name__]}


def checkpoint_configs(accelerator, model, args: argparse.Namespace) -> tuple[dict, dict | None]:
    """(model_config.json, transformers config.json or None) of the prepared model on the main rank; ({}, None)
    on the others."""
    if not accelerator.is_main_process:
        return {}, None
    unwrapped = accelerator.unwrap_model(model)
    return {**model_config_of(unwrapped, args), **tokenizer_entry(args)}, transformers_config_of(unwrapped)


# ---------------------------------------------------------------- save
def save_checkpoint(accelerator, run_dir: str, iteration: int, model, optimizer, lr_scheduler,
                    extra_state: dict, args: argparse.Namespace) -> str | None:
    """Atomically write <run_dir>/<iteration>/ (+ model_config.json, latest). Collective: call on every rank.

    Honours args.no_save_optim, args.save_total_limit, args.max_shard_size. Returns the folder on main."""
    run_dir = os.path.abspath(run_dir)
    main = accelerator.is_main_process
    state = full_state_dict(accelerator, model)
    config, hf_config = checkpoint_configs(accelerator, model, args)
    tmp = os.path.join(run_dir, f"{TMP_PREFIX}{iteration}")
    with_optim = optimizer is not None and not getattr(args, "no_save_optim", False)

    def prepare() -> None:
        if main:
            _start_save(run_dir, tmp, with_optim)

    def write() -> None:
        if with_optim:
            _write_rank_state(accelerator, tmp, optimizer, model)
        if main:
            write_model_files(tmp, state, config, hf_config, args)
            if with_optim:
                write_shared_state(tmp, shared_state(accelerator, optimizer, lr_scheduler), extra_state, args)
            fsync_tree(tmp)

    def publish() -> None:
        if main:
            _publish(run_dir, tmp, iteration, config)

    for step, action in (("preparing", prepare), ("writing", write), ("publishing", publish)):
        _collective_step(accelerator, step, action, run_dir, iteration, tmp)
    if main:
        try:
            apply_retention(run_dir, getattr(args, "save_total_limit", None), keep=iteration)
        except OSError as e:  # the new checkpoint is complete; an undeleted old one is only wasted space
            logger.warning("Could not delete old checkpoints in %s (%s); the new checkpoint is saved.", run_dir, e)
        logger.info("Saved checkpoint %s/%d (%s).", run_dir, iteration,
                    "with training state" if with_optim else "weights only")
    return os.path.join(run_dir, str(iteration)) if main else None


def _collective_step(accelerator, step: str, action, run_dir: str, iteration: int, tmp: str) -> None:
    """Run `action` on every rank, then a barrier that raises everywhere if any rank failed (no hangs)."""
    from accelerate.utils import gather_object

    def any_rank_failed(failed_here: bool) -> bool:
        return any(gather_object([failed_here])) if accelerator.num_processes > 1 else failed_here

    run_agreed_step(step, action, any_rank_failed, accelerator.is_main_process, run_dir, iteration, tmp)


def run_agreed_step(step: str, action, any_rank_failed, main: bool, run_dir: str, iteration: int, tmp: str,
                    where: str = "") -> None:
    """Run `action` on this rank; `any_rank_failed(failed_here)` is the collective every rank calls. If any rank
    failed, the main process removes `tmp` and every rank raises: the error itself, or one CheckpointError sentence
    for a full disk / permissions / another rank's failure. `where` qualifies the save (" in the background")."""
    error: Exception | None = None
    try:
        action()
    except Exception as e:  # noqa: BLE001 - every rank must hear about it before anyone raises
        error = e
    if not any_rank_failed(error is not None):
        return
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    if error is not None and not isinstance(error, OSError):
        raise error
    reason = f"{error.strerror or error}: {error.filename}" if error is not None else "another rank failed"
    raise CheckpointError(f"Saving checkpoint {iteration} into {run_dir}{where} failed while {step} ({reason}); "
                          "free disk space or fix permissions and retry — the previous checkpoint is untouched.") \
        from error


def _start_save(run_dir: str, tmp: str, with_optim: bool) -> None:
    os.makedirs(run_dir, exist_ok=True)
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        replaced = name[len(OLD_PREFIX):]
        if name.startswith(OLD_PREFIX) and not os.path.exists(os.path.join(run_dir, replaced)):
            durable_rename(path, os.path.join(run_dir, replaced))  # finish a swap that a crash interrupted
        elif name.startswith((TMP_PREFIX, OLD_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(tmp, TRAINING_STATE) if with_optim else tmp)


def _optimizer_is_sharded(accelerator) -> bool:
    """DeepSpeed ZeRO / FSDP keep a partition of the optimizer on each rank: the engine saves it (sharded_state)."""
    return sharded_state.is_sharded(accelerator)


def _write_rank_state(accelerator, tmp: str, optimizer, model=None) -> None:
    """Every rank: its RNG states (dropout streams differ per rank) and, if sharded, its optimizer part."""
    rank = accelerator.process_index
    paths = [os.path.join(tmp, TRAINING_STATE, f"rng_state_{rank}.pth")]
    save_torch(_rng_state(), paths[0])
    if _optimizer_is_sharded(accelerator):  # collective: DeepSpeed / DCP write every rank's shard
        sharded_state.save_sharded_state(accelerator, model, optimizer, os.path.join(tmp, TRAINING_STATE))
    for path in paths:
        fsync_path(path)


def write_model_files(tmp: str, state: dict[str, torch.Tensor], config: dict, hf_config: dict | None,
                      args: argparse.Namespace) -> None:
    """The main rank's model part of a checkpoint: weights, model_config.json, config.json, tokenizer files."""
    write_weights(tmp, state, getattr(args, "max_shard_size", "5GB"))
    write_json(os.path.join(tmp, MODEL_CONFIG), config)
    if hf_config is not None:
        write_json(os.path.join(tmp, HF_CONFIG), hf_config)
    write_tokenizer(tmp, args)


def shared_state(accelerator, optimizer, lr_scheduler) -> dict[str, Any]:
    """training_state/ files the main rank writes with torch.save: file name -> state dict (live references)."""
    objects: dict[str, Any] = {}
    if not _optimizer_is_sharded(accelerator):
        objects[OPTIMIZER] = optimizer.state_dict()
    if lr_scheduler is not None:
        objects[SCHEDULER] = lr_scheduler.state_dict()
    if getattr(accelerator, "scaler", None) is not None:
        objects[SCALER] = accelerator.scaler.state_dict()
    return objects


def write_shared_state(tmp: str, objects: dict[str, Any], extra_state: dict, args: argparse.Namespace) -> None:
    """`shared_state` objects plus trainer_state.json and args.json into <tmp>/training_state/."""
    folder = os.path.join(tmp, TRAINING_STATE)
    for name, obj in objects.items():
        save_torch(obj, os.path.join(folder, name))
    write_json(os.path.join(folder, TRAINER_STATE), extra_state)
    write_json(os.path.join(folder, ARGS_FILE), vars(args) if args is not None else {})


def _publish(run_dir: str, tmp: str, iteration: int, config: dict) -> None:
    final = os.path.join(run_dir, str(iteration))
    if os.path.exists(final):  # same iteration saved again: swap, so a crash leaves one of the two
        old = os.path.join(run_dir, f"{OLD_PREFIX}{iteration}")
        durable_rename(final, old)
        durable_rename(tmp, final)
        shutil.rmtree(old)
    else:
        durable_rename(tmp, final)
    atomic_write_text(os.path.join(run_dir, MODEL_CONFIG), json.dumps(config, indent=4, sort_keys=True, default=str))
    atomic_write_text(os.path.join(run_dir, LATEST), str(iteration))


def apply_retention(run_dir: str, limit: int | None, keep: int) -> list[int]:
    """Delete all but the newest `limit` complete iteration folders (never `keep`); returns the removed."""
    if not limit:
        return []
    done = [int(n) for n in os.listdir(run_dir) if n.isdigit() and is_iteration_dir(os.path.join(run_dir, n))]
    removed = sorted((i for i in done if i != keep), reverse=True)[max(limit - 1, 0):]
    for iteration in removed:  # rename first: a half-deleted folder must never look like a checkpoint
        trash = os.path.join(run_dir, f"{TMP_PREFIX}del-{iteration}")
        os.rename(os.path.join(run_dir, str(iteration)), trash)
        shutil.rmtree(trash)
    if removed:
        logger.info("Removed old checkpoints %s (--save-total-limit %d).", removed, limit)
    return removed


# ---------------------------------------------------------------- load
def load_model_weights(model: torch.nn.Module, iteration_dir: str, mode: str) -> None:
    """Before accelerator.prepare: weights into the plain model (the missing-key rules of docs/checkpoints.md)."""
    state, tied = read_weights(iteration_dir)
    load_state_dict_into(model, state, mode=mode, tied=tied, source=iteration_dir)
    if mode == "inference":
        model.eval()
    logger.info("Loaded weights from %s (mode %s).", iteration_dir, mode)


def load_training_state(accelerator, iteration_dir: str, optimizer, lr_scheduler, model=None) -> dict | None:
    """After prepare: optimizer, scheduler, grad scaler, this rank's RNG; returns extra_state, or None
    (with a log line) when the checkpoint is weights-only. `model` (the prepared one) is needed for FSDP."""
    folder = os.path.join(iteration_dir, TRAINING_STATE)
    if not os.path.isdir(folder):
        logger.warning("%s has no %s/ (weights-only checkpoint: --no-save-optim or SAT); the optimizer state "
                       "is absent, so it starts fresh and the learning rate re-warms up.", iteration_dir,
                       TRAINING_STATE)
        return None
    rank = accelerator.process_index
    if sharded_state.has_sharded_state(folder):
        sharded_state.load_sharded_state(accelerator, model, optimizer, folder)
    else:
        _load_optimizer(optimizer, os.path.join(folder, OPTIMIZER))
    if lr_scheduler is not None and os.path.isfile(os.path.join(folder, SCHEDULER)):
        lr_scheduler.load_state_dict(_torch_load(os.path.join(folder, SCHEDULER)))
    if getattr(accelerator, "scaler", None) is not None and os.path.isfile(os.path.join(folder, SCALER)):
        accelerator.scaler.load_state_dict(_torch_load(os.path.join(folder, SCALER)))
    rng_file = os.path.join(folder, f"rng_state_{rank}.pth")
    if os.path.isfile(rng_file):
        _set_rng_state_from(rng_file)
    else:
        logger.warning("%s is missing (saved with another world size); rank %d keeps its fresh RNG state, so "
                       "the resumed run is not bit-identical.", rng_file, rank)
    return _read_trainer_state(os.path.join(folder, TRAINER_STATE))


def _read_trainer_state(path: str) -> dict:
    advice = "the checkpoint is incomplete or damaged — load another iteration with --load-iteration N."
    if not os.path.isfile(path):
        raise CheckpointError(f"Trainer state {path} is missing; {advice}")
    state = read_json(path, "Trainer state", advice)
    if not isinstance(state, dict) or isinstance(state.get("iteration"), bool) \
            or not isinstance(state.get("iteration"), int):
        raise CheckpointError(f"Trainer state {path} is not an object with an integer 'iteration'; {advice}")
    return state


def _set_rng_state_from(rng_file: str) -> None:
    try:
        _set_rng_state(_torch_load(rng_file))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"RNG state {rng_file} does not hold the random states sat_accel saves ({e!r}); "
                              "load another iteration with --load-iteration N.") from e


def _load_optimizer(optimizer, optimizer_file: str) -> None:
    saved = _torch_load(optimizer_file)  # an unreadable file is reported as such, not as a mismatch
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"Optimizer state {optimizer_file} does not fit this run's parameters ({e}); "
                              "resume with the same model and frozen parameters, or use --mode finetune.") from e


def _torch_load(path: str) -> Any:
    return safe_torch_load(path, what="Training-state file", advice="the checkpoint is incomplete or damaged "
                           "— load another iteration with --load-iteration N.")


# ---------------------------------------------------------------- RNG
def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
