"""--async-save: the training stall per checkpoint, synchronous vs asynchronous, BERT-base-sized state on CPU.

training_main trains sat_accel's BertModel at BERT-base size (12 layers, hidden 768, vocab 30522, MLM head:
133M parameters, AdamW: a 1.5 GB checkpoint with training state) on tiny batches, saving every
--save-interval iterations; runs with and without --async-save alternate. forward_step stamps every
iteration; stall per save = the saving iteration's time minus the median iteration time. Also reported: how
much slower the iterations are while a background write runs (the writer shares the CPU with training), the
time the loop spends inside save() (the same stall without the iteration-to-iteration noise), the whole cost of
a save (cost_s: the saving iteration and the next 10, each minus the median: the stall plus the slowdown while
the background write runs) and the run's wall time from the first iteration to the end of training_main.

    python bench/async_save.py --rounds 2 --iters 60 --save-interval 20
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sat_accel import get_args, training_main  # noqa: E402
from sat_accel.model import BertModel  # noqa: E402

BERT_BASE = ["--num-layers", "12", "--hidden-size", "768", "--num-attention-heads", "12", "--vocab-size", "30522",
             "--max-sequence-length", "512", "--layernorm-order", "post"]


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int):
        self.ids = torch.randint(0, 30522, (n, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i]}


def timed_saves(durations: list[float]):
    """Wrap the loop's save() so that the time the training loop spends inside it is recorded."""
    from sat_accel.training import loop

    inner = loop.save

    def save(run, training):
        start = time.perf_counter()
        inner(run, training)
        durations.append(time.perf_counter() - start)
    return loop, inner, save


def run(o, asynchronous: bool) -> dict:
    stamps: list[float] = []
    in_save: list[float] = []
    loop, inner, wrapped = timed_saves(in_save)

    def forward_step(data_iterator, model, args, timers):
        stamps.append(time.perf_counter())
        ids = next(data_iterator)["input_ids"]
        logits, *_ = model(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))

    root = tempfile.mkdtemp(dir=o.dir)
    try:
        args = get_args(BERT_BASE + [
            "--train-data", "x", "--split", "1", "--train-iters", str(o.iters), "--batch-size", "1",
            "--num-workers", "0", "--log-interval", str(o.iters), "--save", root, "--save-interval",
            str(o.save_interval), "--save-total-limit", "1", "--no-progress", "--summary-dir", root]
            + (["--async-save"] if asynchronous else []))
        loop.save = wrapped
        training_main(args, BertModel, forward_step, lambda path, a: Tokens(o.iters + 2, o.seq))
        end = time.perf_counter()
    finally:
        loop.save = inner
        shutil.rmtree(root, ignore_errors=True)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]  # gaps[i]: iteration i+1 (1-based) and what follows it
    saving = [i - 1 for i in range(o.save_interval, o.iters, o.save_interval)]
    near_save = {i + k for i in saving for k in range(11)}  # the save and the iterations overlapping a background write
    plain = [g for i, g in enumerate(gaps[2:], start=2) if i not in near_save]
    median = statistics.median(plain)
    after = [statistics.mean(gaps[i + 1:i + 6]) for i in saving]
    return {"median_iter_s": median, "stalls_s": [gaps[i] - median for i in saving],
            "in_save_s": in_save[:len(saving)],
            "cost_s": [sum(g - median for g in gaps[i:i + 11]) for i in saving], "run_s": end - stamps[0],
            "next5_iter_over_median": [a / median for a in after], "end_wait_s": end - stamps[-1]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--save-interval", type=int, default=20)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where checkpoints go (default: the temp folder)")
    o = parser.parse_args(argv)
    torch.set_num_threads(o.threads)
    logging.getLogger("sat_accel").setLevel(logging.WARNING)
    results: dict[str, list[dict]] = {"sync": [], "async": []}
    for r in range(o.rounds):
        for name in (["sync", "async"] if r % 2 == 0 else ["async", "sync"]):
            results[name].append(run(o, name == "async"))
            print(f"[round {r}] {name}: {results[name][-1]}", flush=True)
    for key in ("stalls_s", "in_save_s", "cost_s"):
        stall = {k: statistics.median(s for x in v for s in x[key]) for k, v in results.items()}
        print(f"median {key} per save: sync {stall['sync']:.2f} s, async {stall['async']:.2f} s, "
              f"async/sync {stall['async'] / stall['sync']:.3f}", flush=True)


if __name__ == "__main__":
    main()
