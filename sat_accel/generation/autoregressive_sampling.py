"""``filling_sequence``: SAT's incremental decoding loop over a model with ``CachedAutoregressiveMixin``.

``seq`` is 1-D: the context, then ``-1`` for every token to generate (a later id >= 0 is forced in).
The first step runs the context once (batch 1); each later step feeds only the newest token, with the
cached keys/values (``mems`` ``[layers, b, cached, 2 * nkv * d]``) standing in for the rest.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from ..errors import ConfigError
from .sampling_strategies import BaseStrategy


def get_masks_and_position_ids_default(seq: torch.Tensor):
    """SAT's default: tokens ``[1, L]``, causal mask ``[1, 1, L, L]`` (1 = attend), positions ``arange(L)``."""
    tokens = seq.unsqueeze(0)
    mask = torch.ones(1, 1, len(seq), len(seq), device=seq.device).tril_()
    position_ids = torch.arange(len(seq), device=seq.device).unsqueeze(0)
    return tokens, mask, position_ids


def causal_inputs(padding_mask: torch.Tensor, sliding_window: Optional[int] = None):
    """``[b, s]`` padding mask (1 = token, left or right padding) -> (mask ``[b, 1, s, s]``, positions ``[b, s]``).

    The mask is causal and hides padding; positions count real tokens only (0 at each row's first
    token, as transformers' ``generate`` computes them), so a left-padded row sees the same positions
    as the unpadded prompt. ``sliding_window=W`` (Mistral's) also hides keys W or more tokens back.
    """
    keep = padding_mask.bool()
    seq = keep.shape[-1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=keep.device).tril_()
    if sliding_window is not None:
        causal &= torch.ones_like(causal).triu_(1 - sliding_window)
    mask = causal & keep[:, None, None, :]
    position_ids = (keep.long().cumsum(-1) - 1).clamp_(min=0)
    return mask, position_ids


def update_mems(hiddens: list, mems: Optional[torch.Tensor], max_memory_length: int) -> torch.Tensor:
    """Append this step's per-layer ``mem_kv`` ``[b, q, 2 nkv d]`` to ``mems``, keeping the last
    ``max_memory_length`` positions -> ``[layers, b, cached, 2 nkv d]``."""
    new = torch.stack(hiddens)
    if mems is None:
        return new[:, :, -max_memory_length:]
    if mems.shape[1] < new.shape[1]:
        mems = mems.expand(-1, new.shape[1], -1, -1)
    return torch.cat((mems, new), dim=2)[:, :, -max_memory_length:]


def _context_length(seq: torch.Tensor) -> int:
    if seq.dim() != 1 or seq.numel() == 0 or seq[0] < 0:
        raise ConfigError(f"seq must be a 1-D tensor: the context (ids >= 0, at least one) followed by -1 for "
                          f"each token to generate; got shape {tuple(seq.shape)}.")
    unknown = (seq < 0).nonzero()
    return int(unknown[0]) if len(unknown) else len(seq)


def _mem_kv(outputs: list) -> list:
    try:
        return [layer["mem_kv"] for layer in outputs]
    except KeyError:
        raise ConfigError("the model returned no KV cache; add it before generating: "
                          "model.add_mixin('auto-regressive', CachedAutoregressiveMixin()).") from None


def _steps(model, seq, batch_size, strategy, max_memory_length, log_attention_weights,
           get_masks_and_position_ids, mems, kw_args) -> Iterator[tuple]:
    """Yield ``(tokens, logits or None, mems)`` after each appended token (logits None when forced)."""
    counter = _context_length(seq) - 1  # last fixed index
    tokens, mask, position_ids = get_masks_and_position_ids(seq)
    tokens = tokens[..., :counter + 1]
    yield tokens, None, mems
    index = 0 if mems is None else mems.shape[2]  # first position not in the cache
    while counter < len(seq) - 1:
        if seq[counter + 1] >= 0:  # a given token: append it, no sampling
            tokens = torch.cat((tokens, seq[counter + 1:counter + 2].expand(tokens.shape[0], 1)), dim=1)
            counter += 1
            yield tokens, None, mems
            continue
        # keys = the cached positions (maybe trimmed to max_memory_length) + the new ones: the last columns
        first_key = index - (0 if mems is None else mems.shape[2])
        extra = {} if log_attention_weights is None else {
            "log_attention_weights": log_attention_weights[..., index:counter + 1, first_key:counter + 1]}
        logits, *outputs = model(tokens[:, index:], position_ids=position_ids[..., index:counter + 1],
                                 attention_mask=mask[..., index:counter + 1, first_key:counter + 1], mems=mems,
                                 **extra, **kw_args)
        mems = update_mems(_mem_kv(outputs), mems, max_memory_length)
        counter += 1
        index = counter
        logits = logits[:, -1].expand(batch_size, -1)
        tokens, mems = strategy.forward(logits, tokens.expand(batch_size, -1), mems)
        yield tokens, logits, mems
        if strategy.is_done:
            break


@torch.no_grad()  # torch wraps generators: grad mode is restored around every yield
def stream_filling_sequence(model: torch.nn.Module, seq: torch.Tensor, batch_size: int, strategy=None,
                            max_memory_length: int = 100000, log_attention_weights=None,
                            get_masks_and_position_ids: Callable = get_masks_and_position_ids_default,
                            mems: Optional[torch.Tensor] = None, **kw_args) -> Iterator[tuple]:
    """Like ``filling_sequence`` but yields ``(tokens, logits, mems)`` after every sampled token and
    never calls ``strategy.finalize`` (the caller does)."""
    strategy = strategy if strategy is not None else BaseStrategy()
    batch_size = max(batch_size, getattr(strategy, "num_beams", 1))
    for tokens, logits, mems in _steps(model, seq, batch_size, strategy, max_memory_length,
                                       log_attention_weights, get_masks_and_position_ids, mems, kw_args):
        if logits is not None:
            yield tokens, logits, mems


@torch.no_grad()
def filling_sequence(model: torch.nn.Module, seq: torch.Tensor, batch_size: int, strategy=None,
                     max_memory_length: int = 100000, log_attention_weights=None,
                     get_masks_and_position_ids: Callable = get_masks_and_position_ids_default,
                     mems: Optional[torch.Tensor] = None, **kw_args):
    """Fill the ``-1`` slots of ``seq`` -> ``strategy.finalize(tokens, mems)``.

    With ``BaseStrategy`` that is ``(tokens [batch_size, <= len(seq)] including the context, mems)``;
    with ``BeamSearchStrategy`` a list of finished beams, best first. ``mems`` from an earlier call
    continue a cached context (its positions must precede ``seq``'s new ones). Extra keyword
    arguments reach the model's forward on every step.
    """
    strategy = strategy if strategy is not None else BaseStrategy()
    batch_size = max(batch_size, getattr(strategy, "num_beams", 1))
    for tokens, _, mems in _steps(model, seq, batch_size, strategy, max_memory_length, log_attention_weights,
                                  get_masks_and_position_ids, mems, kw_args):
        pass
    return strategy.finalize(tokens, mems)


@torch.no_grad()
def evaluate_perplexity(model: torch.nn.Module, tokens: torch.Tensor, attention_mask, position_ids,
                        loss_mask: torch.Tensor, invalid_slices=(), reduction: str = "mean") -> torch.Tensor:
    """Next-token log-likelihood per row (``reduction='mean'``: ``[b]``; ``'none'``: ``[b, L - 1]``)."""
    if reduction not in ("mean", "none"):
        raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    tokens = tokens.unsqueeze(0) if tokens.dim() == 1 else tokens
    loss_mask = (loss_mask.unsqueeze(0) if loss_mask.dim() == 1 else loss_mask).expand(tokens.shape).float()
    padding = tokens < 0  # -1 marks padding: scored as 0 and left out
    tokens, loss_mask = tokens.masked_fill(padding, 0), loss_mask.masked_fill(padding, 0)
    logits = model(tokens, position_ids, attention_mask)[0].float()
    for invalid in invalid_slices:
        logits[..., invalid] = -float("inf")
    scores = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, tokens[:, 1:, None]).squeeze(-1)
    scores = scores * loss_mask[:, 1:]
    return scores.sum(-1) / loss_mask[:, 1:].sum(-1) if reduction == "mean" else scores
