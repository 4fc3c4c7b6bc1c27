"""Data pipeline: index-free shuffled streams, --split, mixtures and make_loaders."""
from .loaders import make_loaders
from .permutation import Permutation, derive_seed
from .sampler import ShuffledStream, StreamBatchSampler, StrictEvalBatchSampler

__all__ = ["make_loaders", "Permutation", "derive_seed", "ShuffledStream", "StreamBatchSampler",
           "StrictEvalBatchSampler"]
