"""sat_accel: SwissArmyTransformer's training API (get_args, training_main, load_hf_dataset) on Accelerate.

`training_main` and `load_hf_dataset` are imported on first use, so `import sat_accel.model` in a
notebook does not pull in Accelerate or datasets.
"""
from .arguments import get_args

__all__ = ["get_args", "training_main", "load_hf_dataset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "training_main":
        from .training.main import training_main

        return training_main
    if name == "load_hf_dataset":
        from .data.hf import load_hf_dataset

        return load_hf_dataset
    raise AttributeError(f"module 'sat_accel' has no attribute {name!r}")
