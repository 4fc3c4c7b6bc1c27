"""What the main process reports: SAT's log lines, a tqdm bar, TensorBoard / wandb, metrics.jsonl.

metrics.jsonl lives at `<summary-dir or save or ./runs>/<experiment>/metrics.jsonl`: one JSON object per
line with "iteration", "split" ("train" | "valid" | "test"), "loss" and the metrics (plus "lr",
"samples_per_s" and, when known, "tokens_per_s" for training lines; "ppl" for evaluation lines).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import Any

logger = logging.getLogger("sat_accel")


def configure_console_logging() -> None:
    """SAT-like `[time] [LEVEL] message` lines on stderr unless the user configured logging already."""
    root = logging.getLogger("sat_accel")
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(os.environ.get("SAT_LOGLEVEL", os.environ.get("LOGLEVEL", "INFO")).upper())
    root.propagate = False


def metrics_dir(args: argparse.Namespace) -> str:
    """Folder of metrics.jsonl: the summary dir, else the save root, else ./runs; plus the experiment name."""
    base = args.summary_dir or args.save or "runs"
    return os.path.join(base, args.experiment_name)


def train_log_line(iteration: int, train_iters: int, ms_per_iter: float, lr: float, loss: float,
                   metrics: dict[str, float], loss_scale: float | None, samples_per_s: float,
                   tokens_per_s: float | None, skipped: int) -> str:
    """SAT's training log line, with samples/s (and tokens/s when known) and skipped iterations."""
    line = (f" iteration {iteration:8d}/{train_iters:8d} | elapsed time per iteration (ms): {ms_per_iter:.1f} |"
            f" learning rate {lr:.3E} | total loss {loss:.6E} |")
    for name, value in metrics.items():
        line += f" {name} {value:.6E} |"
    if loss_scale is not None:
        line += f" loss scale {loss_scale:.1f} |"
    line += f" samples/s {samples_per_s:.2f} |"
    if tokens_per_s:
        line += f" tokens/s {tokens_per_s:.1f} |"
    if skipped:
        line += f" skipped iterations {skipped} |"
    return line


def eval_log_line(prefix: str, loss: float, metrics: dict[str, float]) -> str:
    """SAT's `validation loss at ... | loss: x | PPL: y | metric: z |` line."""
    line = f" validation loss at {prefix} | loss: {loss:.6E} | PPL: {math.exp(min(20.0, loss)):.6E} |"
    for name, value in metrics.items():
        line += f" {name}: {value:.6E} |"
    return line


class RunReporter:
    """Everything the main process writes about a run; on other ranks every method is a no-op."""

    def __init__(self, args: argparse.Namespace, is_main: bool):
        self.args = args
        self.is_main = is_main
        self.trackers: list[Any] | None = None   # started with the first record: a failed start writes nothing
        self.progress_bar = None
        self.jsonl_path = os.path.join(metrics_dir(args), "metrics.jsonl")
        if is_main and args.save_args:
            write_args_file(args)

    def start_progress_bar(self, start: int, total: int) -> None:
        """A tqdm bar over the training iterations, on an interactive main process unless --no-progress."""
        if self.is_main and not self.args.no_progress and sys.stdout.isatty() and total > start:
            from tqdm.auto import tqdm

            self.progress_bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, leave=False)

    def advance_progress_bar(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.update(1)

    def message(self, text: str) -> None:
        if not self.is_main:
            return
        if self.progress_bar is not None:
            self.progress_bar.write(text)
        else:
            print(text, flush=True)

    def record(self, split: str, iteration: int, values: dict[str, float]) -> None:
        """Append one metrics.jsonl line and send the values to the trackers with SAT's keys."""
        if not self.is_main:
            return
        if self.trackers is None:
            os.makedirs(os.path.dirname(self.jsonl_path), exist_ok=True)
            self.trackers = _start_trackers(self.args)
        with open(self.jsonl_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"iteration": iteration, "split": split, **values}) + "\n")
        prefix = "Train/" if split == "train" else f"Train/{'valid' if split == 'valid' else 'test'}_"
        keyed = {(f"{prefix}train_loss" if split == "train" and k == "loss" else f"{prefix}{k}"): v
                 for k, v in values.items()}
        for tracker in self.trackers:
            tracker.log(keyed, step=iteration)

    def close(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        for tracker in self.trackers or []:
            tracker.finish()
        self.trackers = None


def write_args_file(args: argparse.Namespace) -> str:
    """--save-args, as SAT: every argument as `  name ..... value` in <summary-dir>/runs/<experiment>.txt."""
    path = os.path.join(args.summary_dir, "runs", f"{args.experiment_name}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"  {name} {'.' * (29 - len(name))} {value}\n" for name, value in vars(args).items())
    return path


def _start_trackers(args: argparse.Namespace) -> list[Any]:
    """TensorBoard at <summary-dir>/runs/<experiment> and wandb, through Accelerate's tracker classes."""
    trackers = []
    if args.summary_dir:
        from accelerate.utils import is_tensorboard_available

        if is_tensorboard_available():
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker(args.experiment_name, os.path.join(args.summary_dir, "runs")))
        else:
            logger.warning("TensorBoard is not installed, so --summary-dir only gets metrics.jsonl; "
                           "pip install 'sat-accel[tensorboard]' for event files.")
    if args.wandb:
        from accelerate.tracking import WandBTracker

        trackers.append(WandBTracker(args.wandb_project_name, name=args.experiment_name,
                                     dir=args.summary_dir or None))
    config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    for tracker in trackers:
        tracker.start()
        tracker.store_init_configuration(config)
    return trackers
