"""Parameter groups, AdamW and the learning-rate schedule (SAT's AnnealingLR, fixed)."""
from __future__ import annotations

import argparse
import math

import torch

NORM_CLASS_MARKERS = ("LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm")


def _is_norm(module: torch.nn.Module) -> bool:
    if isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)):
        return True
    return any(marker in type(module).__name__ for marker in NORM_CLASS_MARKERS)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay for biases, norm parameters and params flagged `no_weight_decay`;
    params with an `lr_scale` attribute get their own group. Frozen params are left out."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = not (norm or name == "bias" or getattr(param, "no_weight_decay", False))
            scale = float(getattr(param, "lr_scale", 1.0))
            groups.setdefault((decay, scale), []).append(param)
    ordered = sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), params in ordered]


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW over `param_groups(model)` with the flags' betas, eps, lr and weight decay."""
    groups = param_groups(model, args.weight_decay)
    if not groups:
        raise ValueError("The model has no trainable parameters: unfreeze some or run with --train-iters 0.")
    params = [p for group in groups for p in group["params"]]
    # The fused kernel (one op per step instead of several per tensor) is what HF Trainer uses by default;
    # it needs floating-point parameters on a device that has it.
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps,
                             weight_decay=args.weight_decay, fused=fused or None)


class AnnealingLR:
    """Linear warmup from 0, then linear / cosine / exponential decay to lr x decay_ratio at the horizon.

    Step n (1-based) is the lr used by iteration n. The schedule is a pure function of n, so the
    state is just `last_step` (completed optimizer steps) plus an optional re-warmup start, used when a
    weights-only checkpoint is resumed: lr is scaled by min(1, (n - start) / rewarmup_steps).
    Each param group's lr is the schedule value times the group's `lr_scale`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: float, horizon: int, warmup_steps: float,
                 decay_style: str = "linear", decay_ratio: float = 0.1, last_step: int = 0):
        if decay_style not in ("constant", "linear", "cosine", "exponential"):
            raise ValueError(f"unknown lr decay style {decay_style!r}; use constant, linear, cosine or exponential.")
        self.optimizer = optimizer
        self.max_lr = max_lr
        self.horizon = max(int(horizon), 1)
        self.warmup_steps = min(float(warmup_steps), float(self.horizon))
        self.decay_style = decay_style
        self.decay_ratio = decay_ratio
        self.last_step = last_step
        self.rewarmup_start: int | None = None
        self.rewarmup_steps = 100
        self._apply(self.last_step + 1)

    def lr_at(self, step: int) -> float:
        """Learning rate for iteration `step` (1-based)."""
        lr = self._base_lr(step)
        if self.rewarmup_start is not None:
            lr *= min(1.0, max(step - self.rewarmup_start, 0) / self.rewarmup_steps)
        return lr

    def _base_lr(self, step: int) -> float:
        if self.warmup_steps > 0 and step <= self.warmup_steps:
            return self.max_lr * step / self.warmup_steps
        if self.decay_style == "constant":
            return self.max_lr
        decay_span = self.horizon - self.warmup_steps
        decayed_fraction = 1.0 if decay_span <= 0 else min(max((step - self.warmup_steps) / decay_span, 0.0), 1.0)
        ratio = self.decay_ratio
        if self.decay_style == "linear":
            return self.max_lr * (1.0 - (1.0 - ratio) * decayed_fraction)
        if self.decay_style == "cosine":
            return self.max_lr * (ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * decayed_fraction)))
        return self.max_lr * ratio**decayed_fraction  # exponential

    def _apply(self, step: int) -> None:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        """One completed optimizer step: set the lr of the next iteration."""
        self.last_step += 1
        self._apply(self.last_step + 1)

    def start_rewarmup(self, steps: int = 100) -> None:
        """Ramp the lr back up over `steps` iterations from now (fresh optimizer state after a resume)."""
        self.rewarmup_start, self.rewarmup_steps = self.last_step, max(int(steps), 1)
        self._apply(self.last_step + 1)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Completed steps and re-warmup; the shape comes from the flags, stored only to check them."""
        return {"last_step": self.last_step, "rewarmup_start": self.rewarmup_start,
                "rewarmup_steps": self.rewarmup_steps, "max_lr": self.max_lr, "horizon": self.horizon,
                "warmup_steps": self.warmup_steps, "decay_style": self.decay_style, "decay_ratio": self.decay_ratio}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.rewarmup_start = state.get("rewarmup_start")
        self.rewarmup_steps = int(state.get("rewarmup_steps", 100))
        self._apply(self.last_step + 1)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, last_step: int = 0) -> AnnealingLR:
    """The schedule of the flags: horizon = --lr-decay-iters or --train-iters, warmup = --warmup x horizon."""
    horizon = args.lr_decay_iters or args.train_iters or 1
    return AnnealingLR(optimizer, max_lr=args.lr, horizon=horizon, warmup_steps=args.warmup * horizon,
                       decay_style=args.lr_decay_style, decay_ratio=args.lr_decay_ratio, last_step=last_step)
