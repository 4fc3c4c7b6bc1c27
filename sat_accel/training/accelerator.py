"""args -> Accelerator: precision, CPU rules, gradient accumulation, DDP / DeepSpeed / FSDP selection.

CPU rules (docs/scaling.md): without a GPU, Accelerate forms a real process group only in CPU mode, so we
switch it on ourselves (a `distributed_type: MULTI_GPU` yaml therefore also runs 2 CPU processes); DeepSpeed
on CPU instead needs a gloo process group and must not be combined with cpu=True (that silently drops
DeepSpeed); FSDP through Accelerate needs a GPU and is refused on CPU rather than degraded to DDP.

What `accelerate launch` exports from a yaml (mixed precision, gradient accumulation, process counts) is
checked against our flags here: Accelerate would let those values win silently.
"""
from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType

from ..arguments import record_launch_facts
from ..errors import ConfigError
from . import deepspeed_config

logger = logging.getLogger(__name__)


def mixed_precision(args: argparse.Namespace, has_gpu: bool) -> str:
    """Accelerate's mixed_precision value for the flags; fp16 on CPU falls back to fp32 with a warning.
    With --half-weights the weights are already bf16/fp16, so there is no autocast (and no fp16 loss scaler,
    which refuses fp16 gradients)."""
    if getattr(args, "half_weights", False):
        return "no"
    if args.bf16:
        return "bf16"
    if args.fp16:
        if not has_gpu:
            logger.warning("--fp16 needs a GPU; on CPU this run trains in fp32 (use --bf16 for CPU autocast).")
            return "no"
        return "fp16"
    return "no"


def uses_fsdp() -> bool:
    """An accelerate config with `distributed_type: FSDP` (or `accelerate launch --use_fsdp`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def check_launch_environment(args: argparse.Namespace, has_gpu: bool) -> None:
    """Refuse launcher settings that Accelerate would silently apply against our flags, or that cannot run."""
    if uses_fsdp() and not has_gpu:
        raise ConfigError("FSDP through Accelerate needs a GPU and none is visible: use DDP "
                          "(accelerate_configs/multi_cpu.yaml) or DeepSpeed (--zero-stage N) on CPU.")
    if uses_fsdp() and deepspeed_config.wants_deepspeed(args):
        raise ConfigError("FSDP (accelerate config distributed_type: FSDP) and DeepSpeed (--zero-stage / "
                          "--deepspeed_config) were both asked for; pick one.")
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    wanted = deepspeed_config.requested_precision(args)
    if launcher_precision != "no" and launcher_precision != wanted:
        raise ConfigError(f"The accelerate config asks for mixed_precision {launcher_precision} but the flags say "
                          f"{wanted}: pass --{launcher_precision} or set mixed_precision: 'no' in the yaml.")
    launcher_ga = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    if launcher_ga and launcher_ga.isdigit() and int(launcher_ga) != args.gradient_accumulation_steps:
        raise ConfigError(f"The accelerate config sets gradient_accumulation_steps {launcher_ga} but "
                          f"--gradient-accumulation-steps is {args.gradient_accumulation_steps}: make them equal "
                          "(or drop the key from the yaml; the flag decides).")
    _check_gpus_per_machine(has_gpu)


def _check_gpus_per_machine(has_gpu: bool) -> None:
    """More local processes than GPUs: Accelerate would put two ranks on one GPU (index modulo count)."""
    local, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count() if has_gpu else 0
    if not has_gpu or local <= gpus:
        return
    message = (f"The launcher started {local} processes on this machine but only {gpus} GPU(s) are visible")
    if gpus > 1:  # every process sees the same GPUs: ranks would share them
        raise ConfigError(message + ": set num_processes to the GPU count (times num_machines) in the accelerate "
                          "config, or fix CUDA_VISIBLE_DEVICES.")
    # One visible GPU may be a launcher that binds one GPU per process (fine), so only warn.
    logger.warning("%s; unless your launcher binds one GPU per process, set num_processes to the GPU count.", message)


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """One Accelerator for the run, in CPU mode when no GPU is present, checked against the launcher."""
    has_gpu = torch.cuda.is_available()
    check_launch_environment(args, has_gpu)
    precision = mixed_precision(args, has_gpu)
    kwargs = dict(mixed_precision=precision, gradient_accumulation_steps=args.gradient_accumulation_steps)
    plugin = deepspeed_config.build_plugin(args, has_gpu, precision)
    if plugin is not None:
        kwargs.update(deepspeed_plugin=plugin, kwargs_handlers=deepspeed_config.process_group_kwargs(has_gpu))
    else:
        kwargs["cpu"] = not has_gpu
    # A notebook may call training_main again with other flags (e.g. --bf16 after fp32): Accelerate keeps its
    # settings in process-wide singletons and would refuse the change, so start them afresh (the process
    # group and device, in PartialState, stay).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(**kwargs)
    check_world_size(accelerator)
    record_launch_facts(args, accelerator.process_index, accelerator.num_processes,
                        accelerator.local_process_index, str(accelerator.device))
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


def remove_mixed_precision_forward_wrapper(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Give the prepared model back its own forward, without Accelerate's mixed-precision wrapper (autocast +
    outputs converted to fp32): the loop runs the whole forward_step under `accelerator.autocast()` instead.
    The user's loss then sees the model's bf16/fp16 outputs under autocast, as a Hugging Face model's loss
    inside its forward does, and no fp32 copy of large outputs (LM logits: 2 GB for BERT-base at batch 32
    x 512) is written and back-propagated; autocast still computes softmax/cross-entropy in fp32."""
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # restores the original forward in place


def is_fsdp(accelerator: Accelerator) -> bool:
    """Whether the run's model is wrapped by FSDP (1 or 2)."""
    return accelerator.distributed_type == DistributedType.FSDP
