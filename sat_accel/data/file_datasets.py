"""SAT's map-style file datasets: fixed-width binary token files, TSV files and LMDB stores.

Each applies the user's `process_fn` to one raw row, as in SAT, so a `create_dataset_function` written
for SAT (`BinaryDataset(path, process_fn, length_per_sample=...)`) works unchanged.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError


class BinaryDataset(Dataset):
    """Rows of `length_per_sample` numbers of `dtype` in a flat binary file (memory-mapped unless `preload`)."""

    def __init__(self, path: str, process_fn: Callable, length_per_sample: int = 64 + 1024 + 4096,
                 dtype: str = "int32", preload: bool = False, **kwargs: Any):
        if not length_per_sample or length_per_sample <= 0:
            raise DataError(f"BinaryDataset needs a positive length_per_sample, got {length_per_sample!r}.")
        self.process_fn, self.dtype = process_fn, np.dtype(dtype)
        row_bytes = length_per_sample * self.dtype.itemsize
        size = _file_size(path)
        if size % row_bytes:
            raise DataError(f"{path} has {size} bytes, not a whole number of rows of {length_per_sample} x "
                            f"{self.dtype.name}; check length_per_sample and dtype.")
        rows = size // row_bytes
        if preload:
            self.bin = np.fromfile(path, dtype=self.dtype).reshape(rows, length_per_sample)
        else:
            self.bin = np.memmap(path, dtype=self.dtype, mode="r", shape=(rows, length_per_sample))

    def __len__(self) -> int:
        return self.bin.shape[0]

    def __getitem__(self, index: int) -> Any:
        return self.process_fn(self.bin[index])


class TSVDataset(Dataset):
    """Lines of a tab-separated file, split on tabs (the first line is the header when `with_heads`)."""

    def __init__(self, path: str, process_fn: Callable, with_heads: bool = True, **kwargs: Any):
        _file_size(path)
        self.process_fn = process_fn
        with open(path, encoding="utf-8") as f:
            self.heads = f.readline().rstrip("\n").split("\t") if with_heads else None
            self.items = [line.rstrip("\n").split("\t") for line in f]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.process_fn(self.items[index])


class LMDBDataset(Dataset):
    """SAT's LMDB layout: key 'length' holds the row count, key str(i) a pickled row (needs `pip install lmdb`).

    Only open LMDB stores you made yourself: rows are unpickled."""

    def __init__(self, path: str, process_fn: Callable):
        try:
            import lmdb
        except ImportError as e:
            raise DataError("LMDBDataset needs the lmdb package: pip install lmdb.") from e
        self.env = lmdb.open(path, max_readers=32, readonly=True, lock=False, readahead=False, meminit=False)
        self.process_fn = process_fn
        with self.env.begin(write=False) as txn:
            self.length = int(txn.get(b"length").decode("utf-8"))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        with self.env.begin(write=False) as txn:
            return self.process_fn(pickle.loads(txn.get(str(index).encode("utf-8"))))


def _file_size(path: str) -> int:
    if not os.path.isfile(path):
        raise DataError(f"dataset file {path} does not exist; check the --train-data/--valid-data path.")
    return os.path.getsize(path)
