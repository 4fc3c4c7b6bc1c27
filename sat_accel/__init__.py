"""sat_accel: SwissArmyTransformer's training API (get_args, training_main, load_hf_dataset) on Accelerate.

`training_main`, `load_hf_dataset`, `AutoModel`, `get_tokenizer` and `mpu` are imported on first use, so
`import sat_accel.model` in a notebook does not pull in Accelerate or datasets. Everything `sat` exports
at the top level is here: `from sat_accel import mpu, get_args, get_tokenizer, AutoModel, update_args_with_file`.
"""
from .arguments import get_args, update_args_with_file

__all__ = ["get_args", "update_args_with_file", "training_main", "load_hf_dataset", "AutoModel",
           "get_tokenizer", "mpu"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "training_main":
        from .training.main import training_main

        return training_main
    if name == "load_hf_dataset":
        from .data.hf import load_hf_dataset

        return load_hf_dataset
    if name == "AutoModel":
        from .model import AutoModel

        return AutoModel
    if name == "get_tokenizer":
        from .tokenization import get_tokenizer

        return get_tokenizer
    if name == "mpu":
        import importlib

        return importlib.import_module(".mpu", __name__)
    raise AttributeError(f"module 'sat_accel' has no attribute {name!r}")
