"""Accuracy as an `evaluate` metric module that loads offline by path (no hub, no scikit-learn).

    import evaluate
    metric = evaluate.load("/path/to/sat_accel/metrics/accuracy.py")   # or sat_accel.metrics.load_metric("accuracy")
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])        # {'accuracy': 0.666...}

Same inputs and outputs as the hub's "accuracy" metric: ``normalize`` (fraction or count) and optional
``sample_weight``. This file is copied and imported by `evaluate` on its own, so it imports no sat_accel code.
"""
from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the proportion of predictions equal to their reference, (TP + TN) / (TP + TN + FP + FN)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground truth labels.
    normalize (bool, default True): return the fraction of correct predictions; False returns their (weighted) count.
    sample_weight (list of float, optional): one weight per example.
Returns:
    accuracy (float): fraction in [0, 1] when normalize=True, else the (weighted) number of correct predictions.
Example:
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""

_CITATION = ""


class Accuracy(evaluate.Metric):
    """Fraction (or count) of predictions that equal their reference."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions has shape {predictions.shape} but references {references.shape}; pass one of each per example."
            )
        weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if weights.shape != predictions.shape:
            raise ValueError(f"sample_weight has {weights.shape[0]} values for {len(predictions)} examples; pass one per example.")
        correct = float(np.sum(weights * (predictions == references)))
        if not normalize:
            return {"accuracy": correct}
        total = float(np.sum(weights))
        return {"accuracy": correct / total if total else float("nan")}
