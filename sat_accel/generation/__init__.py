"""SAT's generation API: ``filling_sequence`` with sampling strategies, over a KV-cached model."""
from .autoregressive_sampling import (causal_inputs, evaluate_perplexity, filling_sequence,
                                      get_masks_and_position_ids_default, stream_filling_sequence)
from .sampling_strategies import BaseStrategy, BeamSearchStrategy, top_k_logits

__all__ = ["filling_sequence", "stream_filling_sequence", "get_masks_and_position_ids_default", "causal_inputs",
           "evaluate_perplexity", "BaseStrategy", "BeamSearchStrategy", "top_k_logits"]
