"""args -> Accelerator: precision, CPU rules, gradient accumulation, DeepSpeed / FSDP selection.

CPU rules (see README "Running on CPU"): without a GPU, Accelerate forms a real process group only in
CPU mode, so we switch it on ourselves; DeepSpeed on CPU instead needs a gloo process group and must not
be combined with cpu=True (that silently drops DeepSpeed).
"""
from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from ..errors import ConfigError
from . import deepspeed_config

logger = logging.getLogger(__name__)


def mixed_precision(args: argparse.Namespace, has_gpu: bool) -> str:
    """Accelerate's mixed_precision value for the flags; fp16 on CPU falls back to fp32 with a warning."""
    if args.bf16:
        return "bf16"
    if args.fp16:
        if not has_gpu:
            logger.warning("--fp16 needs a GPU; on CPU this run trains in fp32 (use --bf16 for CPU autocast).")
            return "no"
        return "fp16"
    return "no"


def _uses_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """One Accelerator for the run, in CPU mode when no GPU is present, checked against the launcher."""
    has_gpu = torch.cuda.is_available()
    if _uses_fsdp() and not has_gpu:
        raise ConfigError("FSDP through Accelerate needs a GPU and none is visible: use DDP "
                          "(accelerate_configs/multi_cpu.yaml) or DeepSpeed (--zero-stage N) on CPU.")
    kwargs = dict(mixed_precision=mixed_precision(args, has_gpu),
                  gradient_accumulation_steps=args.gradient_accumulation_steps)
    plugin = deepspeed_config.build_plugin(args, has_gpu)
    if plugin is not None:
        kwargs.update(deepspeed_plugin=plugin, kwargs_handlers=deepspeed_config.process_group_kwargs(has_gpu))
    else:
        kwargs["cpu"] = not has_gpu
    accelerator = Accelerator(**kwargs)
    check_world_size(accelerator)
    args.rank, args.world_size = accelerator.process_index, accelerator.num_processes
    args.local_rank = accelerator.local_process_index
    args.device = str(accelerator.device)
    return accelerator


def check_world_size(accelerator: Accelerator) -> None:
    """Fail loudly when the launcher started N processes but they did not join one process group."""
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if launched > 1 and accelerator.num_processes != launched:
        raise ConfigError(
            f"The launcher started {launched} processes (WORLD_SIZE={launched}) but Accelerate sees "
            f"{accelerator.num_processes}: they would train independently. On CPU launch with "
            "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`, "
            "not `accelerate launch --cpu`.")


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED
