"""DataSettings: every setting the data layer reads, taken from the flags once, where make_loaders starts.

Below make_loaders nothing reads `args` (it only goes on to the user's create_dataset_function, as SAT
passes it), so the data layer's inputs are these fields and nothing else. Defaults are the flags' defaults,
so a Namespace that lacks a setting (built by hand, as in a notebook) behaves as if the flag was not given.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class DataSettings:
    """The data flags (see docs/data.md) plus this process's place in the launch (rank, world_size)."""
    batch_size: int
    train_data: Sequence[str] = ()
    valid_data: Sequence[str] = ()
    test_data: Sequence[str] = ()
    train_data_weights: Optional[Sequence[float]] = None
    split: str = "1000,1,1"
    block_size: int = 10000
    seed: int = 1234
    eval_batch_size: Optional[int] = None
    gradient_accumulation_steps: int = 1
    epochs: Optional[float] = None
    num_workers: int = 0
    prefetch_factor: Optional[int] = None
    strict_eval: bool = False
    iterable_dataset: bool = False
    group_by_length: bool = False
    group_by_length_window: Optional[int] = None
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_args(cls, args: Any) -> "DataSettings":
        """The settings found on `args` (a flag that is missing or None keeps its default)."""
        values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in values.items() if value is not None})

    @property
    def eval_batch(self) -> int:
        """The evaluation batch size per rank: --eval-batch-size, else --batch-size."""
        return self.eval_batch_size or self.batch_size
