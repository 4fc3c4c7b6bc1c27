"""SAT's `sat.data_utils` path: make_loaders, load_hf_dataset and the file datasets (re-exports).

SAT's webdataset/jsonl readers (SimpleDistributedWebDataset, MetaDistributedWebDataset,
JsonlIterableDataset) are not provided: return a torch IterableDataset (e.g. a `webdataset` pipeline)
from create_dataset_function with --iterable-dataset instead.
"""
from ..data.file_datasets import BinaryDataset, LMDBDataset, TSVDataset
from ..data.hf import load_hf_dataset
from ..data.loaders import make_loaders
from ..data.splits import get_split, should_split

__all__ = ["make_loaders", "load_hf_dataset", "BinaryDataset", "TSVDataset", "LMDBDataset", "get_split",
           "should_split"]
