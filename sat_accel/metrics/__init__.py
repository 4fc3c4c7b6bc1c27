"""Metric modules shipped with sat_accel, loadable by `evaluate` with no hub access.

Each ``<name>.py`` in this folder is a self-contained `evaluate.Metric` script; ``load_metric(name)``
hands its path to ``evaluate.load`` so it works with HF_EVALUATE_OFFLINE=1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sat_accel.errors import ConfigError

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric modules shipped here (e.g. ``['accuracy']``)."""
    return sorted(p.stem for p in METRICS_DIR.glob("*.py") if not p.stem.startswith("_"))


def metric_path(name: str) -> Path:
    """Path of the metric script ``name`` (what ``evaluate.load`` takes)."""
    if name not in available_metrics():
        raise ConfigError(f"Unknown metric {name!r}; choose one of {available_metrics()} or call evaluate.load yourself.")
    return METRICS_DIR / f"{name}.py"


def load_metric(name: str, **kwargs: Any):
    """``evaluate.load`` of a shipped metric by path (offline-safe); kwargs go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["available_metrics", "load_metric", "metric_path"]
