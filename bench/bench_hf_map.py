"""load_hf_dataset's map: SAT's per-row map vs our batched adapter vs the adapter on 2 processes.

    python bench/bench_hf_map.py --rows 40000

Prints seconds for each way, side by side in one run, and the ratios against SAT's way.
"""
from __future__ import annotations

import argparse
import logging
import time

import datasets
from datasets import Dataset

from sat_accel.data.hf import RowsToBatch

WORDS = "the red lighthouse at cedar point was built in 1874 by a baker named thomas reed".split()
VOCAB = {w: i for i, w in enumerate(WORDS)}


def process_fn(row: dict) -> dict:
    """A tokenizer-like row function: words -> ids padded to 128, plus the label."""
    ids = [VOCAB.get(w, 0) for w in row["text"].split()][:128]
    return {"input_ids": ids + [0] * (128 - len(ids)), "label": row["n"] % 2}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=40_000)
    a = p.parse_args()
    datasets.disable_progress_bars()
    logging.disable(logging.WARNING)
    raw = Dataset.from_dict({"text": [" ".join(WORDS * 6)] * a.rows, "n": list(range(a.rows))})
    keys = tuple(sorted(process_fn(raw[0])))
    kw = dict(load_from_cache_file=False, keep_in_memory=True)
    results = {
        "sat: map(process_fn, batched=False)": timed(lambda: raw.map(process_fn, **kw)),
        "ours: batched adapter, 1 process": timed(lambda: raw.map(RowsToBatch(process_fn, keys), batched=True, with_indices=True, **kw)),
        "ours: batched adapter, 2 processes": timed(lambda: raw.map(RowsToBatch(process_fn, keys), batched=True, with_indices=True, num_proc=2, **kw)),
    }
    base = results["sat: map(process_fn, batched=False)"]
    for name, seconds in results.items():
        print(f"{name:40s} {seconds:7.2f} s   speed-up x{base / seconds:.2f}")


if __name__ == "__main__":
    main()
