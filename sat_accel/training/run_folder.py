"""One folder per run: the main process claims `<experiment-name>-%m-%d-%H-%M` atomically.

Two runs started in the same minute with the same --experiment-name (a sweep, a re-launch) used to share one
folder: interleaved checkpoints, `latest` pointing at the other run's, one run deleting the other's temporary
folders. Now the name is claimed with `os.mkdir` (atomic: exactly one process can create a folder) under every
root the run writes into (--save, and the metrics folder: --summary-dir, else --save, else ./runs); when the
name is taken the run uses the next free `-2`, `-3`, ... suffix, logged. A pretrain resume keeps the loaded
run's name and folder.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
from datetime import datetime

from accelerate.utils import broadcast_object_list

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def run_roots(args: argparse.Namespace) -> list[str]:
    """The folders a run creates its `<name>/` in: --save and the metrics root, without repeats."""
    roots = [args.save] if args.save else []
    metrics_root = args.summary_dir or args.save or "runs"
    return [os.path.abspath(r) for r in dict.fromkeys(roots + [metrics_root])]


def claim_run_name(base: str, roots: list[str]) -> str:
    """The first of `base`, `base-2`, `base-3`, ... whose folder this process created under every root."""
    for root in roots:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run folder's parent {root} ({e.strerror or e}); pass a writable "
                              "--save / --summary-dir.") from e
    for n in itertools.count(1):
        name = base if n == 1 else f"{base}-{n}"
        if _claim_everywhere(name, roots):
            if n > 1:
                logger.info("Run folder %s is taken (another run of the same name started this minute); "
                            "this run uses %s.", base, name)
            return name
    raise AssertionError("unreachable")


def _claim_everywhere(name: str, roots: list[str]) -> bool:
    created: list[str] = []
    for root in roots:
        folder = os.path.join(root, name)
        try:
            os.mkdir(folder)
        except FileExistsError:
            for own in created:  # give back what this attempt took (still empty)
                os.rmdir(own)
            return False
        except OSError as e:
            raise ConfigError(f"cannot create the run folder {folder} ({e.strerror or e}); pass a writable "
                              "--save / --summary-dir.") from e
        created.append(folder)
    return True


def shared_run_name(args: argparse.Namespace, is_main: bool, resumed_name: str | None) -> str:
    """The run's name, the same on every rank: `resumed_name` (pretrain resume), else claimed on the main
    process from `<experiment base name>-%m-%d-%H-%M` and broadcast (a failure is raised on every rank)."""
    if resumed_name is not None:
        return resumed_name
    result: list = [None, None]
    if is_main:
        try:
            base = f"{args.experiment_base_name}-{datetime.now().strftime('%m-%d-%H-%M')}"
            result[0] = claim_run_name(base, run_roots(args))
        except ConfigError as e:
            result[1] = str(e)
    name, error = broadcast_object_list(result)
    if error is not None:
        raise ConfigError(error)
    return name


def release_if_empty(args: argparse.Namespace) -> None:
    """Remove this run's claimed folders that stayed empty (nothing saved or logged): a failed or
    evaluation-only run leaves no litter. `os.rmdir` never removes a folder with files in it."""
    for root in run_roots(args):
        try:
            os.rmdir(os.path.join(root, args.experiment_name))
        except OSError:
            pass
