"""SAT's `sat.helpers` message functions for user scripts: `print_rank0` (main process only) and `print_all`.

They log through their own logger ("sat_accel.helpers", a stderr handler with SAT's format, level from
SAT_LOGLEVEL or LOGLEVEL, default INFO), so a script's messages show without any logging set-up, as in SAT.
"""
from __future__ import annotations

import logging
import os
import sys

import torch



class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message is logged (notebooks and test runners replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_logger = logging.getLogger("sat_accel.helpers")
if not _logger.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(message)s"))
    _logger.addHandler(_handler)
    _logger.propagate = False  # training_main's reporting handler on "sat_accel" would print it twice
    _logger.setLevel(os.environ.get("LOGLEVEL") or os.environ.get("SAT_LOGLEVEL") or "INFO")


def _level(level: int | str) -> int:
    return getattr(logging, level.upper()) if isinstance(level, str) else level


def _rank() -> int | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return None


def print_rank0(msg: object, level: int | str = logging.INFO, flush: bool = True) -> None:
    """Log `msg` on the main process only (prefixed with the rank once a process group exists)."""
    rank = _rank()
    if rank is None:
        _logger.log(_level(level), msg)
    elif rank == 0:
        _logger.log(_level(level), f"[RANK {rank}] {msg}")
    if flush:
        _logger.handlers[0].flush()


def print_all(msg: object, level: int | str = logging.INFO, flush: bool = True) -> None:
    """Log `msg` on every process (prefixed with the rank once a process group exists)."""
    rank = _rank()
    _logger.log(_level(level), msg if rank is None else f"[RANK {rank}] {msg}")
    if flush:
        _logger.handlers[0].flush()
