"""Our flags -> Accelerate's DeepSpeedPlugin (minimal: the scale-out work completes it)."""
from __future__ import annotations

import argparse
import os

from accelerate.utils import InitProcessGroupKwargs


def wants_deepspeed(args: argparse.Namespace) -> bool:
    return (args.zero_stage > 0 or args.deepspeed_config is not None
            or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true"))


def build_plugin(args: argparse.Namespace, has_gpu: bool):
    """A DeepSpeedPlugin when DeepSpeed is asked for, else None."""
    if not wants_deepspeed(args):
        return None
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin(zero_stage=args.zero_stage, gradient_accumulation_steps=args.gradient_accumulation_steps,
                           gradient_clipping=args.gradient_clipping, zero3_save_16bit_model=True)


def process_group_kwargs(has_gpu: bool) -> list:
    """DeepSpeed on CPU needs gloo; on GPU Accelerate's default (nccl) is right."""
    return [] if has_gpu else [InitProcessGroupKwargs(backend="gloo")]
