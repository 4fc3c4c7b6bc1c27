"""Dynamic padding: a collator that pads each batch to its own longest sequence (rounded up to 8).

Pair it with ``--group-by-length`` (training_main uses it by default then): similar lengths in a batch
mean little padding. Works on examples of different lengths (lists / 1-D tensors) and on examples stored
already padded to a fixed length with an ``attention_mask`` (right padding): those are cut back to the
batch's longest real sequence. Padding is masked (``attention_mask`` 0, token labels -100), so the model
and the loss see exactly what they would see with padding to a fixed length.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DataError

__all__ = ["PadToLongest"]

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips


class PadToLongest:
    """``collate_fn`` for dict examples: sequence fields padded to the batch's longest, rounded up to
    ``pad_to_multiple_of``; other fields stacked as ``torch.utils.data.default_collate`` does.

    Pad values: ``pad_token_id`` for ``input_ids``, -100 for ``labels``/``label`` sequences, 0 otherwise
    (``attention_mask``, ``token_type_ids``, ...); ``pad_values`` overrides any field's value.
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int = 8,
                 pad_values: Optional[dict[str, Any]] = None) -> None:
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}.")
        self.multiple = int(pad_to_multiple_of)
        self.pad_values = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "label": IGNORE_INDEX,
                           **(pad_values or {})}

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        if not examples or not all(isinstance(e, Mapping) for e in examples):
            kind = type(examples[0]).__name__ if examples else "nothing"
            raise DataError(f"PadToLongest collates dict examples, got {kind}; return dicts from the dataset "
                            "or pass your own collate_fn.")
        fields = {key: [_tensor(e[key]) for e in examples] for key in examples[0]}
        sequences = self._sequence_fields(fields)
        keep = self._kept_length(fields["attention_mask"]) if "attention_mask" in sequences else None
        batch: dict[str, torch.Tensor] = {}
        for key, values in fields.items():
            if key in sequences:
                batch[key] = self._pad(key, [v[:keep] for v in values] if keep else values)
            else:
                batch[key] = torch.utils.data.default_collate(values)
        return batch

    @staticmethod
    def _sequence_fields(fields: dict[str, list[torch.Tensor]]) -> set[str]:
        """Fields that run along the tokens: as long as ``input_ids`` (else ``attention_mask``) in every
        example; without either, every field whose length differs between examples."""
        ref = next((fields[k] for k in ("input_ids", "attention_mask") if k in fields), None)
        out = set()
        for key, values in fields.items():
            if any(not isinstance(v, torch.Tensor) or v.dim() == 0 for v in values):
                continue
            if ref is not None and all(isinstance(r, torch.Tensor) and r.dim() and len(v) == len(r)
                                       for v, r in zip(values, ref)):
                out.add(key)
            elif ref is None and len({len(v) for v in values}) > 1:
                out.add(key)
        return out

    def _kept_length(self, masks: list[torch.Tensor]) -> Optional[int]:
        """For examples stored padded to one length: where the batch's real tokens end (rounded up)."""
        if len({m.shape for m in masks}) != 1 or masks[0].dim() != 1:
            return None
        nonzero = torch.stack(masks).ne(0).any(0).nonzero()
        return self._round(int(nonzero[-1]) + 1 if len(nonzero) else 1)

    def _round(self, length: int) -> int:
        return -(-length // self.multiple) * self.multiple

    def _pad(self, key: str, values: list[torch.Tensor]) -> torch.Tensor:
        if any(v.shape[1:] != values[0].shape[1:] for v in values):
            raise DataError(f"field {key!r} has examples of shapes {sorted({tuple(v.shape) for v in values})}; "
                            "only the first dimension may differ between examples.")
        longest = self._round(max(len(v) for v in values))
        out = torch.full((len(values), longest, *values[0].shape[1:]), self.pad_values.get(key, 0),
                         dtype=values[0].dtype)
        for row, value in zip(out, values):
            row[:len(value)] = value
        return out


def _tensor(value: Any) -> Any:
    """Numbers and (nested) lists of numbers as tensors; anything else (strings, ...) unchanged."""
    if isinstance(value, (torch.Tensor, str, bytes)):
        return value
    array = np.asarray(value)
    return torch.as_tensor(array) if array.dtype.kind in "biuf" else value
