"""The shipped accuracy metric loads with evaluate offline, by path and through load_metric."""
from __future__ import annotations

import os
import socket

import evaluate
import pytest

from sat_accel.errors import ConfigError
from sat_accel.metrics import available_metrics, load_metric, metric_path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline as evaluate sees it, and any socket connection fails the test."""
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_evaluate_load_by_path_offline():
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    metric = evaluate.load(str(metric_path("accuracy")))
    assert metric.compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1]) == {"accuracy": 0.75}


def test_load_metric_helper_and_options():
    metric = load_metric("accuracy")
    assert isinstance(metric, evaluate.Metric)
    assert metric.compute(predictions=[1, 1, 0], references=[1, 0, 0], normalize=False) == {"accuracy": 2.0}
    weighted = metric.compute(predictions=[1, 0], references=[1, 1], sample_weight=[3.0, 1.0])
    assert weighted["accuracy"] == pytest.approx(0.75)


def test_add_batch_accumulates():
    metric = load_metric("accuracy")
    metric.add_batch(predictions=[1, 0], references=[1, 1])
    metric.add_batch(predictions=[0, 0], references=[0, 0])
    assert metric.compute()["accuracy"] == pytest.approx(0.75)


def test_unknown_metric_names_the_choices():
    assert "accuracy" in available_metrics()
    with pytest.raises(ConfigError, match=r"Unknown metric 'f1'.*\['accuracy'\]"):
        load_metric("f1")
