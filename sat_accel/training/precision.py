"""Parameter precision under training_main: fp32 master weights, half-precision compute by autocast.

Whatever dtype the model was built in (``from_pretrained`` with --bf16 in --mode inference, a model the
user cast, mixins added in fp32 to a bf16 trunk), training_main gives the optimizer fp32 parameters and
lets Accelerate's mixed precision (autocast) do the bf16/fp16 compute — so updates smaller than a bf16
weight's precision accumulate instead of rounding away. ``--half-weights`` keeps the weights in bf16/fp16
instead (half the parameter memory, as DeepSpeed's pure-bf16 weights): then no autocast is needed and fp16
runs without a loss scaler. Either way every floating-point parameter ends up in one dtype.
"""
from __future__ import annotations

import argparse
import logging

import torch

logger = logging.getLogger(__name__)


def half_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """torch.bfloat16 / torch.float16 for --bf16 / --fp16, else None."""
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None


def parameter_dtype(args: argparse.Namespace) -> torch.dtype:
    """The dtype of every floating-point parameter during training (see the module docstring)."""
    if getattr(args, "half_weights", False) and half_dtype(args) is not None:
        return half_dtype(args)
    return torch.float32


def settle_parameter_dtype(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """Cast ``model``'s floating-point parameters and buffers to ``parameter_dtype(args)`` if any differ."""
    target = parameter_dtype(args)
    found = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()})
    if found and found != [str(target)]:
        logger.info("The model's parameters are %s; training keeps them in %s%s.", ", ".join(found), target,
                    " (fp32 master weights; --bf16/--fp16 compute runs under autocast)"
                    if target == torch.float32 and half_dtype(args) is not None else "")
        model.to(target)
