"""Strategies pick the next tokens from logits: ``BaseStrategy`` (sampling/greedy), ``BeamSearchStrategy``."""
from .base_strategy import BaseStrategy, top_k_logits
from .beam_search_strategy import BeamSearchStrategy

__all__ = ["BaseStrategy", "BeamSearchStrategy", "top_k_logits"]
