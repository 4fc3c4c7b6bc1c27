"""SAT-style named timers: `timers("forward").start(); ...; timers("forward").stop()`.

On a GPU a timer synchronises the device at start and stop, which keeps the CPU from queueing work ahead:
SAT pays that on every iteration. The training loop therefore switches `Timers.measuring` on for one
iteration per log interval (the one that is logged) and off otherwise, where start()/stop() cost nothing.
"""
from __future__ import annotations

import time

import torch


def _synchronize() -> None:
    if torch.cuda.is_initialized():  # cheap check; True only once CUDA is in use
        torch.cuda.synchronize()


class Timer:
    """Accumulates wall time between start() and stop() calls until reset."""

    def __init__(self, name: str, synchronize: bool = True, owner: "Timers | None" = None):
        self.name = name
        self.synchronize = synchronize
        self.owner = owner
        self.elapsed_s = 0.0
        self.started = False
        self._start = 0.0

    def start(self) -> None:
        if self.started:
            raise RuntimeError(f"timer {self.name!r} was started twice; call stop() first.")
        self.started = True
        if not self._measuring():
            return
        if self.synchronize:
            _synchronize()
        self._start = time.perf_counter()

    def stop(self) -> None:
        if not self.started:
            raise RuntimeError(f"timer {self.name!r} was stopped without being started.")
        self.started = False
        if not self._measuring():
            return
        if self.synchronize:
            _synchronize()
        self.elapsed_s += time.perf_counter() - self._start

    def _measuring(self) -> bool:
        return self.owner is None or self.owner.measuring

    def reset(self) -> None:
        self.elapsed_s = 0.0
        self.started = False

    def elapsed(self, reset: bool = True) -> float:
        """Seconds accumulated so far (a running timer is included and keeps running)."""
        was_started = self.started
        if was_started:
            self.stop()
        value = self.elapsed_s
        if reset:
            self.reset()
        if was_started:
            self.start()
        return value


class Timers:
    """Lazily created named timers, logged together with the training log line."""

    def __init__(self, synchronize: bool = True):
        self.timers: dict[str, Timer] = {}
        self.synchronize = synchronize
        self.measuring = True  # False: start()/stop() only keep their bookkeeping (no sync, no clock)

    def __call__(self, name: str) -> Timer:
        if name not in self.timers:
            self.timers[name] = Timer(name, self.synchronize, self)
        return self.timers[name]

    def summary(self, normalizer: float = 1.0, reset: bool = True) -> dict[str, float]:
        """Milliseconds per `normalizer` for every timer that has run, e.g. per iteration."""
        return {name: timer.elapsed(reset=reset) * 1000.0 / normalizer for name, timer in self.timers.items()}

    def log_string(self, normalizer: float = 1.0, reset: bool = True) -> str:
        parts = [f"{name}: {ms:.2f}" for name, ms in self.summary(normalizer, reset).items()]
        return "time (ms) | " + " | ".join(parts) if parts else ""
