"""``--compile``: torch.compile of the model, in place, after Accelerate has wrapped it.

The unwrapped module (inside DDP, the DeepSpeed engine, or the FSDP2-sharded module itself) is compiled
with ``nn.Module.compile``, which compiles the module's call in place: parameter names, ``state_dict`` keys,
checkpoints and ``from_pretrained`` stay exactly as in eager mode, and the user's ``forward_step`` (the loss
included) still runs eagerly around the compiled model. Compiling after wrapping is the order torch
recommends for FSDP2; for DDP it means one backward graph per step (gradients are all-reduced when it
ends, not overlapped with it).
"""
from __future__ import annotations

import argparse
import logging
import os

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["check_compile_flags", "compile_model", "graph_break_count"]


def check_compile_flags(args: argparse.Namespace) -> None:
    """Refuse combinations --compile cannot serve, each with what to do instead."""
    if not getattr(args, "compile", False):
        return
    launcher = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "no").lower()
    if launcher not in ("no", ""):
        raise ConfigError(f"The accelerate config sets dynamo_backend {launcher} and --compile compiles the model "
                          "too; set dynamo_backend: 'NO' in the config (or drop --compile).")
    if getattr(args, "zero_stage", 0) == 3:
        raise ConfigError("--compile with --zero-stage 3 is not supported: ZeRO-3 gathers parameters in module "
                          "hooks that torch.compile cannot trace; use --zero-stage 1/2 or FSDP, or drop --compile.")


def compile_model(accelerator, model: torch.nn.Module, args: argparse.Namespace) -> None:
    """Compile the module inside ``model`` (the prepared one) in place with the --compile-* settings."""
    inner = accelerator.unwrap_model(model, keep_fp32_wrapper=True)
    kwargs = {"backend": getattr(args, "compile_backend", None) or "inductor"}
    if getattr(args, "compile_mode", None):
        kwargs["mode"] = args.compile_mode
    inner.compile(**kwargs)
    logger.info("--compile: %s compiled with %s; the first steps include compilation (and a recompile when "
                "shapes change).", type(inner).__name__, ", ".join(f"{k}={v}" for k, v in kwargs.items()))


def graph_break_count() -> int:
    """Graph breaks torch._dynamo has recorded in this process (0 = every compiled call is one graph)."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())
