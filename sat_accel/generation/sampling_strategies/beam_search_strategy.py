"""BeamSearchStrategy with SAT's arguments and scoring; ``deterministic=True`` ranks like transformers.

SAT draws the ``(ends + 1) * num_beams`` candidate (beam, token) pairs by sampling from the softmax of
the filtered logits and ranks them by cumulative log-probability; ``deterministic=True`` takes the best
``2 * num_beams`` instead (transformers' ``num_beams`` search). Unlike SAT, the first step expands one
beam only (the beams are identical copies), so no two beams start with the same token.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from .base_strategy import FILTERED, repetition_penalised, top_k_logits


class BeamSearchStrategy:
    """``forward(logits [nb, V], tokens [nb, L], mems) -> (tokens', mems')``; ``finalize`` returns the
    finished beams best first and ``mems=None`` (``consider_end=True``), or the running beams and mems."""

    def __init__(self, num_beams: int, length_penalty: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 0.0, consider_end: bool = True, end_tokens: Iterable[int] = (),
                 invalid_slices: Iterable = (), no_repeat_ngram_size: int = 0, min_tgt_length: int = 0,
                 repetition_penalty: float = 1.0, prefer_min_length: int = 5, prefer_max_length: int = 100,
                 stop_n_iter_unchanged: int = 10, deterministic: bool = False):
        if num_beams < 1 or temperature <= 0:
            raise ConfigError(f"num_beams must be >= 1 and temperature > 0, got {num_beams} and {temperature}.")
        self.num_beams, self.length_penalty, self.temperature = num_beams, length_penalty, temperature
        self.top_k, self.top_p, self.consider_end = top_k, top_p, consider_end
        self.end_tokens, self.invalid_slices = list(end_tokens), list(invalid_slices)
        self.ngram, self.min_tgt_length, self.repetition_penalty = no_repeat_ngram_size, min_tgt_length, repetition_penalty
        self.prefer_min_length, self.prefer_max_length = prefer_min_length, prefer_max_length
        self.stop_n_iter_unchanged, self.deterministic = stop_n_iter_unchanged, deterministic
        self._init_cache()

    def _init_cache(self) -> None:
        self.end_beams: list = []
        self.end_beams_penalized_scores: list = []
        self.cached_beam_scores: Optional[torch.Tensor] = None
        self.cached_beam_ngram_bans: list = [{} for _ in range(self.num_beams)]
        self.is_done = False
        self.end_beams_unchanged = 0
        self.context_length: Optional[int] = None

    def _penalised(self, score: float, gen_length: int) -> float:
        """SAT's length normalisation: ``score / (min(prefer_max, gen) + 1) ** p``, p eased below prefer_min."""
        penalty = self.length_penalty
        if gen_length < self.prefer_min_length:
            t = gen_length / self.prefer_min_length
            penalty = t * penalty + (1 - t) * min(0.5, penalty / 2)
        return float(score) / (min(self.prefer_max_length, gen_length) + 1) ** penalty

    def _add_end_beam(self, score, beam: torch.Tensor) -> bool:
        """Insert a finished beam in score order (keep num_beams); True when it became the best."""
        penalised = self._penalised(score, len(beam) - self.context_length)
        rank = sum(1 for s in self.end_beams_penalized_scores if s >= penalised)
        self.end_beams.insert(rank, beam)
        self.end_beams_penalized_scores.insert(rank, penalised)
        del self.end_beams[self.num_beams:], self.end_beams_penalized_scores[self.num_beams:]
        return rank == 0

    def _filtered_logits(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = repetition_penalised(logits, tokens, self.context_length, self.repetition_penalty, self.temperature)
        for invalid in self.invalid_slices:
            logits[..., invalid] = FILTERED
        if self.min_tgt_length > tokens.shape[-1]:
            logits[..., self.end_tokens] = FILTERED
        if self.ngram > 0 and tokens.shape[-1] > self.ngram:
            for row in range(logits.shape[0]):
                prefix = tuple(tokens[row, tokens.shape[-1] - self.ngram + 1:].tolist())
                for banned in self.cached_beam_ngram_bans[row].get(prefix, ()):
                    logits[row, banned] = FILTERED
        return top_k_logits(logits, self.top_k, self.top_p)

    def _candidates(self, logits: torch.Tensor, scores: torch.Tensor):
        """(cumulative score, beam index, token) of the candidates, best first."""
        flat = scores.view(-1)
        if self.deterministic:
            best, picked = torch.topk(flat, min(2 * self.num_beams, flat.numel()))
        else:
            count = (max(1, len(self.end_tokens)) + 1) * self.num_beams
            picked = torch.multinomial(F.softmax(logits.view(-1), dim=0), num_samples=min(count, flat.numel()))
            best, order = torch.sort(flat[picked], descending=True)
            picked = picked[order]
        vocab = logits.shape[-1]
        return best, torch.div(picked, vocab, rounding_mode="trunc"), picked % vocab

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor, mems):
        """One beam step: extend, rank, move finished beams aside, reorder ``mems`` along its batch axis."""
        if self.context_length is None:
            self.context_length = tokens.shape[-1]
        first = self.cached_beam_scores is None
        if first:  # identical copies of the context: expanding one avoids duplicate beams
            logits, tokens = logits[:1], tokens[:1]
        logits = self._filtered_logits(logits, tokens)
        previous = 0.0 if first else self.cached_beam_scores[:, None]
        scores = F.log_softmax(logits, dim=-1) + previous
        best, beam_ids, next_tokens = self._candidates(logits, scores)
        if mems is not None and mems.shape[1] < tokens.shape[0]:
            mems = mems.expand(-1, tokens.shape[0], -1, -1)
        keep, kept_scores, bans, changed = [], [], [], False
        for score, beam, token in zip(best.tolist(), beam_ids.tolist(), next_tokens.tolist()):
            extended = torch.cat((tokens[beam], tokens.new_tensor([token])))
            if token in self.end_tokens:
                changed = self._add_end_beam(score, extended) or changed
            elif len(keep) < self.num_beams:
                keep.append((beam, extended))
                kept_scores.append(score)
                bans.append(self._extended_bans(tokens[beam], beam, token))
            else:
                break
        if not keep:
            raise ConfigError("every beam candidate was an end token; lower min_tgt_length or raise num_beams.")
        index = torch.tensor([b for b, _ in keep], device=tokens.device)
        tokens = torch.stack([t for _, t in keep])
        mems = None if mems is None else mems.index_select(1, index)
        self.cached_beam_scores = torch.tensor(kept_scores, device=logits.device)
        self.cached_beam_ngram_bans = bans
        self._update_done(changed)
        return tokens, mems

    def _extended_bans(self, beam_tokens: torch.Tensor, beam: int, token: int) -> dict:
        if self.ngram <= 0:
            return {}
        bans = dict(self.cached_beam_ngram_bans[beam])
        prefix = tuple(beam_tokens[len(beam_tokens) - self.ngram + 1:].tolist())
        bans[prefix] = bans.get(prefix, ()) + (token,)
        return bans

    def _update_done(self, changed: bool) -> None:
        if changed:
            self.end_beams_unchanged = 0
        elif self.end_beams:
            self.end_beams_unchanged += 1
            self.is_done = self.end_beams_unchanged >= self.stop_n_iter_unchanged

    def finalize(self, tokens: torch.Tensor, mems):
        """``(finished beams best first, None)`` with ``consider_end``, else ``(running beams, mems)``."""
        result = tokens
        if self.consider_end:
            if not self.is_done:
                for row in range(tokens.shape[0]):
                    self._add_end_beam(self.cached_beam_scores[row], tokens[row])
            result, mems = self.end_beams, None
        self._init_cache()
        return result, mems
