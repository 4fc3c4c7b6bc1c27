"""SAT's `sat.training.deepspeed_training` path: `training_main` (re-export; Accelerate does the DeepSpeed part)."""
from ..arguments import initialize_distributed, set_random_seed
from .main import training_main

__all__ = ["training_main", "set_random_seed", "initialize_distributed"]
