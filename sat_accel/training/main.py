"""training_main: SAT's entry point, as a sequence of named steps (docs/architecture.md, README)."""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
from typing import Any, Callable

import torch

from ..arguments import set_random_seed, validate_args
from ..checkpoint_format import IterationDir
from ..data.loaders import make_loaders
from ..errors import ConfigError
from . import checkpoint, precision, sharded_state
from .accelerator import build_accelerator, is_fsdp, remove_mixed_precision_forward_wrapper
from .async_save import AsyncCheckpointer
from .compile import check_compile_flags, compile_model
from .reporting import RunReporter, configure_console_logging
from .loop import Run, StopSignal, Training, UserCallbacks, evaluate_and_report, global_batch_size, save, train
from .optim import build_lr_scheduler, build_optimizer
from .run_folder import release_if_empty, shared_run_name
from .timers import Timers

logger = logging.getLogger(__name__)


def training_main(args: argparse.Namespace, model_cls: Any, forward_step_function: Callable,
                  create_dataset_function: Callable, handle_metrics_function: Callable | None = None,
                  init_function: Callable | None = None, collate_fn: Callable | None = None,
                  forward_step_eval: Callable | None = None, length_function: Callable | None = None
                  ) -> torch.nn.Module:
    """Train `model_cls` (a class, an nn.Module, or the (model, args) pair from from_pretrained) with the
    user's forward_step on the datasets from create_dataset_function. Returns the unwrapped model.
    `length_function(example) -> int` gives --group-by-length the example lengths (docs/data.md)."""
    configure_console_logging()
    problems = validate_args(args)  # again: code may have changed args since get_args
    if problems:
        raise ConfigError(" ".join(problems))
    check_compile_flags(args)
    accelerator = build_accelerator(args)
    if accelerator.num_processes > 1:
        # Tear the process group down before interpreter shutdown: gloo can abort ("terminate called
        # without an active exception") when it is destroyed during finalisation of a finished run.
        atexit.register(accelerator.state.destroy_process_group)
    load_from = checkpoint.resolve_load_dir(args.load, args.load_iteration) if args.load else None
    # SAT writes the run's name over --experiment-name; the user's own name is kept beside it, so that a
    # second training_main with the same args (a notebook) does not stack a second timestamp.
    args.experiment_base_name = getattr(args, "experiment_base_name", None) or args.experiment_name
    train_loader, valid_loader, test_loader = make_loaders(args, create_dataset_function, collate_fn,
                                                            length_function)
    model = instantiate_model(model_cls, args)
    precision.settle_parameter_dtype(model, args)
    model.to(accelerator.device)
    if load_from is not None:  # weights into the plain model, before it is wrapped
        checkpoint.load_model_weights(model, load_from.path, args.mode)
    if init_function is not None:
        init_function(args, model)
    callbacks = UserCallbacks(forward_step_function, forward_step_eval or forward_step_function,
                              handle_metrics_function)
    args.experiment_name = shared_experiment_name(args, load_from, accelerator.is_main_process)
    reporter = RunReporter(args, accelerator.is_main_process)
    loaders = {"train": train_loader, "valid": valid_loader, "test": test_loader}
    will_train = wants_training(args, train_loader)
    try:
        if will_train:
            model, optimizer, fsdp_skeleton = prepare_for_training(accelerator, model, args)
        else:
            model, optimizer, fsdp_skeleton = prepare_for_evaluation(accelerator, model, args), None, None
        run = Run(args, accelerator, model, callbacks, Timers(), reporter, loaders)
        stop_reason = train_and_save(run, optimizer, load_from) if will_train else None
        if stop_reason is None and test_loader is not None:
            evaluate_and_report(run, "test", "the end of training for test data")
    finally:
        reporter.close()
        if accelerator.is_main_process:
            release_if_empty(args)
    accelerator.wait_for_everyone()
    return sharded_state.unwrapped_full_model(accelerator, run.model, fsdp_skeleton)


def shared_experiment_name(args: argparse.Namespace, load_from: IterationDir | None, is_main: bool) -> str:
    """`<experiment-name>-%m-%d-%H-%M` (the user's --experiment-name, args.experiment_base_name), its folder
    claimed atomically on the main process (run_folder.py) and shared; a pretrain resume keeps the name of
    the run it loads."""
    resumed = None
    if load_from is not None and args.mode == "pretrain":
        resumed = os.path.basename(os.path.normpath(os.path.dirname(load_from.path)))
    return shared_run_name(args, is_main, resumed)


def instantiate_model(model_cls: Any, args: argparse.Namespace) -> torch.nn.Module:
    """A class is built with model_cls(args); an nn.Module or a (model, args) pair is used as is."""
    if isinstance(model_cls, tuple) and len(model_cls) == 2 and isinstance(model_cls[0], torch.nn.Module):
        return model_cls[0]
    if isinstance(model_cls, torch.nn.Module):
        return model_cls
    if isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module):
        return model_cls(args)
    raise ConfigError(f"training_main needs a model class, an nn.Module or the (model, args) pair from "
                      f"from_pretrained as model_cls, got {type(model_cls).__name__}.")


def wants_training(args: argparse.Namespace, train_loader) -> bool:
    """Train only with iterations to run, a training split and a mode other than inference."""
    return bool(args.train_iters) and args.mode != "inference" and train_loader is not None


def prepare_for_evaluation(accelerator, model: torch.nn.Module, args: argparse.Namespace
                           ) -> torch.nn.Module:
    """The model wrapped for evaluation only (no optimizer); compiled with --compile."""
    model = accelerator.prepare_model(model, evaluation_mode=True)
    remove_mixed_precision_forward_wrapper(accelerator, model)
    if getattr(args, "compile", False):
        compile_model(accelerator, model, args)
    return model


def prepare_for_training(accelerator, model: torch.nn.Module, args: argparse.Namespace):
    """(wrapped model, wrapped optimizer, the model on meta when FSDP shards it in place, else None)."""
    if hasattr(model, "disable_untrainable_params"):
        model.disable_untrainable_params()
    optimizer = build_optimizer(model, args)
    fsdp_skeleton = sharded_state.meta_skeleton(model) if is_fsdp(accelerator) else None
    model, optimizer = accelerator.prepare(model, optimizer)
    remove_mixed_precision_forward_wrapper(accelerator, model)
    if getattr(args, "compile", False):
        compile_model(accelerator, model, args)
    return model, optimizer, fsdp_skeleton


def train_and_save(run: Run, optimizer, load_from: IterationDir | None) -> str | None:
    """Schedule, resume, the loop and the final save. Returns the early-stop reason, if any."""
    args = run.args
    training = Training(optimizer, build_lr_scheduler(optimizer, args), checkpoint_dir(args), StopSignal())
    restored_rng = load_from is not None and args.mode == "pretrain" and resume(run, training, load_from)
    if not restored_rng:
        set_random_seed(args.seed)
    run.reporter.message(("Continuing" if run.progress.iteration else "Starting") +
                         f" {'finetuning' if args.mode == 'finetune' else 'training'} {args.experiment_name} "
                         f"at iteration {run.progress.iteration} of {args.train_iters}")
    if getattr(args, "async_save", False) and training.checkpoint_dir is not None:
        training.async_saver = AsyncCheckpointer(run.accelerator)
    try:
        with stop_on_signals(training.stop_signal):
            stop_reason = train(run, training)
        if stop_reason is None and run.progress.iteration > 0:
            save(run, training)
    finally:
        if training.async_saver is not None:  # the last save is complete on every rank before we return
            training.async_saver.close()
    return stop_reason


def checkpoint_dir(args: argparse.Namespace) -> str | None:
    """Where this run's checkpoints go: <save>/<experiment name>, or None without --save."""
    return os.path.join(args.save, args.experiment_name) if args.save else None


def resume(run: Run, training: Training, load_from: IterationDir) -> bool:
    """Full training state (RNG included) when the checkpoint has it; else SAT's weights-only resume with a
    re-warmup. Returns whether the RNG state was restored."""
    load_dir, iteration = load_from
    state = checkpoint.load_training_state(run.accelerator, load_dir, training.optimizer, training.lr_scheduler,
                                           model=run.model)
    if state is not None:
        run.progress.load_state_dict(state, {split: global_batch_size(run, split)
                                             for split in ("train", "valid") if run.loaders.get(split) is not None})
        return True
    run.progress.iteration = training.lr_scheduler.last_step = iteration
    training.lr_scheduler.start_rewarmup(100)
    run.reporter.message(f"no optimizer state in {load_dir}: continuing at iteration {iteration} with a fresh "
                         "optimizer and a 100-iteration lr re-warmup")
    return False


class stop_on_signals:
    """SIGTERM / SIGINT set `flag.requested`; the loop agrees on it across ranks, saves and stops at an
    iteration end. A second signal raises KeyboardInterrupt as usual."""

    def __init__(self, flag: StopSignal):
        self.flag = flag

    def __enter__(self) -> StopSignal:
        self.previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self.flag

    def _handle(self, signum, frame) -> None:
        if self.flag.requested:
            raise KeyboardInterrupt
        self.flag.requested = True
        logger.warning("Received %s: saving and stopping at the end of this iteration.", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
