"""The training loop and evaluation: small functions over one explicit `Run` object.

One iteration = `gradient_accumulation_steps` forward_step calls (one micro-batch each) + one optimizer
step. Losses and metrics stay on the device and are reduced across ranks only when a line is logged;
the only per-iteration host sync is one small all-reduce of flags (non-finite loss, stop request).
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch

from . import checkpoint
from .gather import EvalCollector
from .steps import CountingIterator, ScalarAverager, call_forward_step
from .reporting import RunReporter, eval_log_line, train_log_line
from .timers import Timers
from ..errors import SatAccelError


@dataclass
class UserCallbacks:
    """The functions the user passed to training_main."""
    forward_step: Callable
    forward_step_eval: Callable
    handle_metrics: Callable | None = None


@dataclass
class Progress:
    """Counters that make a run resumable: iteration and, per split, the samples of the global stream consumed
    (independent of batch size, gradient accumulation and world size, so a resume with other values continues
    at exactly the next sample)."""
    iteration: int = 0
    consumed: dict[str, int] = field(default_factory=lambda: {"train": 0, "valid": 0})
    skipped_iters: int = 0
    consecutive_skips: int = 0

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "consumed_samples": dict(self.consumed),
                "skipped_iters": self.skipped_iters}

    def load_state_dict(self, state: dict, global_batch_sizes: dict[str, int]) -> None:
        """``global_batch_sizes`` (samples per global micro-batch of this run, per split) only converts the
        micro-batch counts of checkpoints written before positions were saved in samples."""
        self.iteration = int(state["iteration"])
        if "consumed_samples" in state:
            self.consumed.update({k: int(v) for k, v in state["consumed_samples"].items()})
        else:
            legacy = state.get("consumed", {})
            self.consumed.update({k: int(v) * global_batch_sizes.get(k, 0) for k, v in legacy.items()})
        self.skipped_iters = int(state.get("skipped_iters", 0))


@dataclass
class Run:
    """What training and evaluation share, built once by training_main around the prepared model."""
    args: argparse.Namespace
    accelerator: Any
    model: torch.nn.Module
    callbacks: UserCallbacks
    timers: Timers
    reporter: RunReporter
    loaders: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    iterators: dict[str, CountingIterator] = field(default_factory=dict)


class StopSignal:
    """Set by the SIGTERM/SIGINT handler of training.main.stop_on_signals; read once per iteration."""

    def __init__(self) -> None:
        self.requested = False


@dataclass
class Training:
    """What only training needs, complete before the first iteration."""
    optimizer: Any
    lr_scheduler: Any
    checkpoint_dir: str | None   # <save>/<experiment>; None when --save is not given
    stop_signal: StopSignal
    last_saved: int = -1         # the iteration saved last, so that one iteration is never saved twice
    async_saver: Any = None      # async_save.AsyncCheckpointer with --async-save, else saves are synchronous


class Agreement(NamedTuple):
    """What all ranks decided together at the end of an iteration."""
    finite: bool                 # the loss was finite on every rank: the optimizer step counts
    stop_reason: str | None      # 'signal' or 'exit-duration-in-mins' when any rank asked to stop


def global_batch_size(run: Run, split: str) -> int:
    """Samples of the global stream one micro-batch step takes from ``split`` (batch per process x processes)."""
    sampler = getattr(run.loaders[split], "batch_sampler", None)
    if getattr(sampler, "global_batch_size", None):
        return int(sampler.global_batch_size)
    per_process = run.args.batch_size if split == "train" else (run.args.eval_batch_size or run.args.batch_size)
    return int(per_process) * run.accelerator.num_processes


def data_iterator(run: Run, split: str) -> CountingIterator:
    """A persistent iterator for an infinite split, started at the consumed sample (exact resume, also with
    another batch size, gradient accumulation or world size)."""
    if split not in run.iterators:
        loader = run.loaders[split]
        consumed, step = run.progress.consumed.get(split, 0), global_batch_size(run, split)
        set_position = getattr(loader.batch_sampler, "set_consumed_samples", None)
        if set_position is not None:
            set_position(consumed)
        iterator = iter(loader)
        if set_position is None:  # iterable datasets: approximate resume by skipping what was consumed
            for _ in range(consumed // step):
                next(iterator)
        run.iterators[split] = CountingIterator(iterator, run.accelerator.device, step, start_samples=consumed)
    return run.iterators[split]


def train_step(run: Run, training: Training, iterator: CountingIterator, averager: ScalarAverager,
               deadline: float | None) -> Agreement:
    """One optimizer step over GA micro-batches; returns what the ranks agreed (a non-finite loss skips
    the step on every rank)."""
    accelerator, args = run.accelerator, run.args
    local_loss = torch.zeros((), device=accelerator.device)
    agreed = Agreement(finite=True, stop_reason=None)
    step_metrics: dict[str, list[torch.Tensor]] = {}  # added only once the step is known to count
    for _ in range(args.gradient_accumulation_steps):
        with accelerator.accumulate(run.model):
            run.timers("forward").start()
            # the whole forward_step, loss included, under autocast (see remove_mixed_precision_forward_wrapper)
            with accelerator.autocast():
                loss, metrics = call_forward_step(run.callbacks.forward_step, iterator, run.model, args, run.timers,
                                                  True)
            run.timers("forward").stop()
            run.timers("backward").start()
            accelerator.backward(loss)
            run.timers("backward").stop()
            local_loss += loss.detach().float()
            for name, value in metrics.items():
                if "eval" not in name:
                    step_metrics.setdefault(name, []).append(value.detach())
            if accelerator.sync_gradients:
                run.timers("optimizer").start()
                out_of_time = deadline is not None and time.time() >= deadline
                agreed = agree_on_flags(accelerator, local_loss, training.stop_signal.requested, out_of_time)
                if agreed.finite:
                    if args.gradient_clipping > 0:
                        accelerator.clip_grad_norm_(run.model.parameters(), args.gradient_clipping)
                    training.optimizer.step()
                training.optimizer.zero_grad(set_to_none=True)
                run.timers("optimizer").stop()
    if not agreed.finite:
        return agreed
    if not getattr(training.optimizer, "step_was_skipped", False):
        training.lr_scheduler.step()
    averager.add("loss", local_loss / args.gradient_accumulation_steps)
    for name, values in step_metrics.items():
        for value in values:
            averager.add(name, value)
    return agreed


def agree_on_flags(accelerator, local_loss: torch.Tensor, stop_requested: bool, out_of_time: bool) -> Agreement:
    """One all-reduce per iteration: is the loss finite on every rank, and does any rank want to stop
    (SIGTERM/SIGINT, or --exit-duration-in-mins passed on its clock)? All ranks then act alike."""
    if accelerator.num_processes == 1:  # nothing to agree on: one host sync, no collective
        flags = [float(not torch.isfinite(local_loss)), float(stop_requested), float(out_of_time)]
    else:
        local = torch.tensor([0.0, float(stop_requested), float(out_of_time)], device=local_loss.device)
        local[0] = (~torch.isfinite(local_loss)).float()
        flags = accelerator.reduce(local, reduction="sum").cpu().tolist()
    stop_reason = "signal" if flags[1] > 0 else "exit-duration-in-mins" if flags[2] > 0 else None
    return Agreement(finite=flags[0] == 0, stop_reason=stop_reason)


def train(run: Run, training: Training) -> str | None:
    """Loop until --train-iters. Returns why it stopped early ('exit-interval', 'signal', ...) or None."""
    args, progress = run.args, run.progress
    iterator = data_iterator(run, "train")
    averager = ScalarAverager(run.accelerator.device)
    run.model.train()
    run.reporter.start_progress_bar(progress.iteration, args.train_iters)
    interval_start = time.time()
    limit_mins = args.exit_duration_in_mins
    deadline = interval_start + limit_mins * 60.0 if limit_mins is not None else None
    tokens_start = iterator.tokens
    while progress.iteration < args.train_iters:
        # Phase timers (device syncs on GPU) run only in the iteration that is logged next.
        run.timers.measuring = (progress.iteration + 1) % args.log_interval == 0
        agreed = train_step(run, training, iterator, averager, deadline)
        run.timers.measuring = False
        progress.iteration += 1
        progress.consumed["train"] = iterator.samples
        count_skip(run, agreed.finite)
        run.reporter.advance_progress_bar()
        if progress.iteration % args.log_interval == 0:
            log_training(run, training, averager, time.time() - interval_start, iterator.tokens - tokens_start)
            interval_start, tokens_start = time.time(), iterator.tokens
        if args.save_interval and progress.iteration % args.save_interval == 0:
            save(run, training)
        valid = run.loaders.get("valid")  # a DataLoader's truth value calls len(), which endless ones lack
        if args.eval_interval and progress.iteration % args.eval_interval == 0 and valid is not None:
            evaluate_and_report(run, "valid", f"iteration {progress.iteration}")
        reason = agreed.stop_reason or exit_interval_reached(args, progress.iteration)
        if reason:
            save(run, training)
            run.reporter.message(f"stopping at iteration {progress.iteration}: {reason}")
            return reason
    return None


def count_skip(run: Run, completed: bool) -> None:
    progress = run.progress
    if completed:
        progress.consecutive_skips = 0
        return
    progress.skipped_iters += 1
    progress.consecutive_skips += 1
    run.reporter.message(f"iteration {progress.iteration}: non-finite loss on some rank, skipped backward "
                         "and optimizer step on every rank")
    if progress.consecutive_skips >= run.args.max_skipped_iters:
        raise SatAccelError(f"{progress.consecutive_skips} consecutive iterations had a NaN/Inf loss; stopping. "
                            "Lower --lr, check the data, or use --bf16 instead of --fp16.")


def exit_interval_reached(args: argparse.Namespace, iteration: int) -> str | None:
    """'exit-interval' at a multiple of --exit-interval (an absolute iteration, as SAT) before the end."""
    if args.exit_interval and iteration % args.exit_interval == 0 and iteration < args.train_iters:
        return "exit-interval"
    return None


def save(run: Run, training: Training) -> None:
    """Checkpoint this iteration into the run folder: once per iteration, nothing when --save is off."""
    iteration = run.progress.iteration
    if training.checkpoint_dir is None or training.last_saved == iteration:
        return
    run.timers("checkpoint").start()
    state = {**run.progress.state_dict(), "experiment_name": run.args.experiment_name}
    save_fn = training.async_saver.save if training.async_saver is not None else \
        functools.partial(checkpoint.save_checkpoint, run.accelerator)
    save_fn(training.checkpoint_dir, iteration, run.model, training.optimizer, training.lr_scheduler, state, run.args)
    run.timers("checkpoint").stop()
    training.last_saved = iteration


def log_training(run: Run, training: Training, averager: ScalarAverager, elapsed_s: float, tokens: int) -> None:
    args, accelerator = run.args, run.accelerator
    values = averager.reduce(accelerator)
    loss = values.pop("loss", float("nan"))
    n = args.log_interval
    samples_per_s = n * args.gradient_accumulation_steps * args.batch_size * args.world_size / max(elapsed_s, 1e-9)
    tokens_per_s = tokens * args.world_size / max(elapsed_s, 1e-9) if tokens else None
    lr = training.optimizer.param_groups[0]["lr"]
    scaler = getattr(accelerator, "scaler", None)
    loss_scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None
    run.reporter.message(train_log_line(run.progress.iteration, args.train_iters, elapsed_s * 1000 / n, lr, loss,
                                        values, loss_scale, samples_per_s, tokens_per_s, run.progress.skipped_iters))
    timers_line = run.timers.log_string()  # measured on this (the logged) iteration only
    if timers_line:
        run.reporter.message(timers_line)
    record = {"loss": loss, "lr": lr, **values, "samples_per_s": samples_per_s}
    if tokens_per_s:
        record["tokens_per_s"] = tokens_per_s
    if run.progress.skipped_iters:
        record["skipped_iters"] = run.progress.skipped_iters
    run.reporter.record("train", run.progress.iteration, record)


def evaluate_and_report(run: Run, split: str, prefix: str) -> dict[str, float]:
    """Evaluate a split, log SAT's validation line and record it; returns {"loss": ..., metrics...}."""
    loss, metrics = evaluate(run, split)
    run.reporter.message("-" * 100)
    run.reporter.message(eval_log_line(prefix, loss, metrics))
    run.reporter.message("-" * 100)
    values = {"loss": loss, "ppl": math.exp(min(20.0, loss)), **metrics}
    run.reporter.record(split, run.progress.iteration, values)
    return values


def evaluate(run: Run, split: str) -> tuple[float, dict[str, float]]:
    """Loss averaged over every rank's examples; scalar metrics weighted by examples, or whatever
    handle_metrics_function returns from everything gathered. Strict mode sees each example once."""
    args, loader = run.args, run.loaders[split]
    strict = bool(args.strict_eval)
    if strict:
        iterator = CountingIterator(iter(loader), run.accelerator.device)
        steps = len(loader)
    else:
        iterator = data_iterator(run, split)
        steps = args.eval_iters
    collector = EvalCollector(run.accelerator)
    was_training = run.model.training
    run.model.eval()
    with torch.no_grad():
        for step in range(steps):
            with run.accelerator.autocast():
                loss, metrics = call_forward_step(run.callbacks.forward_step_eval, iterator, run.model, args,
                                                  run.timers, False)
            real = loader.batch_sampler.real_size(step) if strict else args.eval_batch_size
            collector.add(loss, metrics, real)
    if not strict:
        run.progress.consumed[split] = iterator.samples
    run.model.train(was_training)
    return collector.finish(run.callbacks.handle_metrics)
