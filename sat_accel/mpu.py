"""SAT's `mpu` calls with data-parallel meaning (model parallel size is always 1 here).

SAT scripts call `mpu.broadcast_data(keys, data, dtype)` in their `get_batch`, `mpu.vocab_parallel_cross_entropy`
for LM losses and the rank/world-size getters. With one model-parallel rank every process already holds
its own batch on its device (training_main moves it), so `broadcast_data` is the dtype cast and key
selection SAT's version ends with, and the model-parallel getters are constants. Tensor model
parallelism itself is not supported (README, "Differences from SAT").
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError

__all__ = ["broadcast_data", "vocab_parallel_cross_entropy", "get_model_parallel_rank",
           "get_model_parallel_world_size", "get_model_parallel_src_rank", "get_model_parallel_group",
           "get_data_parallel_rank", "get_data_parallel_world_size", "get_data_parallel_group",
           "initialize_model_parallel", "model_parallel_is_initialized", "destroy_model_parallel"]


def broadcast_data(keys: Sequence[str], data: Any, datatype: torch.dtype) -> dict[str, torch.Tensor]:
    """`{key: data[key] as datatype}` for the batch `data` (a dict), as SAT's broadcast returns it."""
    if not isinstance(data, dict):
        raise DataError(f"mpu.broadcast_data needs the batch dict that next(data_iterator) returned, got "
                        f"{type(data).__name__}; make create_dataset_function return dict rows.")
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"mpu.broadcast_data: the batch has no {missing} (it has {sorted(data)}); return "
                        "those keys from your dataset rows or ask for the ones it has.")
    return {k: torch.as_tensor(data[k]).to(datatype) for k in keys}


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unreduced per-token cross entropy: logits `[..., vocab]`, target `[...]` -> loss `[...]` (fp32)."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return loss.view(target.shape)


def get_model_parallel_rank() -> int:
    """Always 0: one model-parallel rank per model."""
    return 0


def get_model_parallel_world_size() -> int:
    """Always 1: tensor model parallelism is not supported."""
    return 1


def get_model_parallel_src_rank() -> int:
    """The global rank that leads this process's model-parallel group: the process itself."""
    return get_data_parallel_rank()


def get_model_parallel_group():
    """There is no model-parallel group to communicate over; a collective on it would be a no-op."""
    raise ConfigError("mpu.get_model_parallel_group(): model parallel size is 1, so there is no group; "
                      "drop the collective (it would only involve this process).")


def get_data_parallel_rank() -> int:
    """This process's rank among the data-parallel processes (= global rank)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def get_data_parallel_world_size() -> int:
    """Number of data-parallel processes (= world size)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def get_data_parallel_group():
    """The process group of all data-parallel processes (the default group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ConfigError("mpu.get_data_parallel_group(): no process group yet; call it inside training_main "
                          "(forward_step, init_function) or after Accelerate has started.")
    return torch.distributed.group.WORLD


def initialize_model_parallel(model_parallel_size: int = 1) -> None:
    """Accepts 1 (nothing to set up); anything larger is tensor parallelism, which is not supported."""
    if model_parallel_size != 1:
        raise ConfigError(f"model parallel size {model_parallel_size} is not supported; shard big models with "
                          "--zero-stage 3 or FSDP instead.")


def model_parallel_is_initialized() -> bool:
    """True once a process group exists (training_main creates it through Accelerate)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def destroy_model_parallel() -> None:
    """Nothing to tear down: there are no model-parallel groups."""
