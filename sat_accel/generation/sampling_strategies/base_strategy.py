"""BaseStrategy: temperature / top-k / top-p sampling with SAT's repetition penalty; ``top_k=1`` is greedy."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from ...errors import ConfigError

FILTERED = -65504.0  # SAT's "impossible" logit (the fp16 minimum), also used for invalid slices


def top_k_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                 filter_value: float = FILTERED) -> torch.Tensor:
    """Set logits outside the ``top_k`` best and outside the ``top_p`` nucleus to ``filter_value``
    (in place, ``[b, vocab]``); 0 disables either filter. The most likely token is always kept."""
    if top_k > 0:
        kth_best = torch.topk(logits, min(int(top_k), logits.shape[-1]))[0][..., -1, None]
        logits.masked_fill_(logits < kth_best, filter_value)
    if top_p > 0.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        beyond = sorted_logits.softmax(-1).cumsum(-1) > top_p
        beyond[..., 1:] = beyond[..., :-1].clone()  # keep the first token that crosses top_p
        beyond[..., 0] = False
        logits.masked_fill_(beyond.scatter(-1, order, beyond), filter_value)
    return logits


def repetition_penalised(logits: torch.Tensor, tokens: torch.Tensor, context_length: int, penalty: float,
                         temperature: float) -> torch.Tensor:
    """fp32 ``logits / (temperature * penalty on tokens generated so far)`` (SAT divides whatever the sign)."""
    divisor = torch.full_like(logits, temperature, dtype=torch.float32)
    if penalty != 1.0 and tokens.shape[-1] > context_length:
        divisor.scatter_(1, tokens[:, context_length:], temperature * penalty)
    return logits.float() / divisor


class BaseStrategy:
    """Sample the next token of every row: ``forward(logits [b, V], tokens [b, L], mems) -> (tokens', mems)``.

    ``top_k=1`` is greedy (argmax; ties go to the lowest id, as in transformers). ``end_tokens``: when
    every row has produced one, ``is_done`` turns True and ``filling_sequence`` stops.
    """

    def __init__(self, invalid_slices: Iterable = (), temperature: float = 1.0, top_k: int = 200,
                 eps: float = 1e-4, top_p: float = 0.0, repetition_penalty: float = 1.0,
                 end_tokens: Optional[Iterable[int]] = None):
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding.")
        if not 0.0 <= top_p <= 1.0 or top_k < 0:
            raise ConfigError(f"top_k must be >= 0 and top_p in [0, 1], got top_k={top_k}, top_p={top_p}.")
        self.invalid_slices = list(invalid_slices)
        self.temperature, self.topk, self.top_p, self.eps = temperature, top_k, top_p, eps
        self.repetition_penalty = repetition_penalty
        self.end_tokens = list(end_tokens or [])
        self._reset()

    def _reset(self) -> None:
        self.context_length: Optional[int] = None
        self._ended: Optional[torch.Tensor] = None
        self._is_done = False

    @property
    def is_done(self) -> bool:
        return self._is_done

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor, mems, temperature: Optional[float] = None,
                nan_default_token: Optional[int] = None):
        """Append one token per row to ``tokens``; ``mems`` pass through unchanged."""
        if self.context_length is None:
            self.context_length = tokens.shape[-1]
        if torch.isnan(logits).any():
            if nan_default_token is None:
                raise ConfigError("the model produced NaN logits; check the weights/precision or pass "
                                  "nan_default_token to BaseStrategy.forward to emit that token instead.")
            logits = torch.full_like(logits, -1000.0)
            logits[..., nan_default_token] = 0.0
        if self.topk == 1 and self.repetition_penalty == 1.0 and not self.invalid_slices:
            return self._append(tokens, logits.argmax(dim=-1, keepdim=True), mems)  # greedy: nothing to rescale
        logits = repetition_penalised(logits, tokens, self.context_length, self.repetition_penalty,
                                      temperature or self.temperature)
        for invalid in self.invalid_slices:
            logits[..., invalid] = FILTERED
        if self.topk == 1:
            pred = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(top_k_logits(logits, self.topk, self.top_p), dim=-1)
            pred = torch.multinomial(probs, num_samples=1)
        return self._append(tokens, pred, mems)

    def _append(self, tokens: torch.Tensor, pred: torch.Tensor, mems):
        self._track_end(pred)
        return torch.cat((tokens, pred.view(tokens.shape[0], 1)), dim=1), mems

    def _track_end(self, pred: torch.Tensor) -> None:
        if not self.end_tokens:
            return
        hit = torch.isin(pred.view(-1), torch.tensor(self.end_tokens, device=pred.device))
        self._ended = hit if self._ended is None or self._ended.shape != hit.shape else self._ended | hit
        self._is_done = bool(self._ended.all())

    def finalize(self, tokens: torch.Tensor, mems):
        """Reset the per-sequence state and return ``(tokens, mems)``."""
        self._reset()
        return tokens, mems
