"""Benchmark: the index-free sampler against torch.randperm, DistributedSampler and SAT's mapping.

Usage: python bench/sampler.py [--big 100000000] [--sat-indices 2000]

Prints, side by side in one run:
1. vectorised throughput of Permutation (10^6 indices per call) at n = 10^3 .. 10^12;
2. per-batch latency of StreamBatchSampler for B=32 (next() on the iterator, and one raw
   32-index stream call);
3. time and peak-RSS increase to the first batch of 32: ours at n=10^9, torch.randperm(big),
   torch DistributedSampler(shuffle=True) over big examples (each case in a fresh process);
4. SAT's RandomMappingDataset mapping (random.Random(i) -> 16 ints -> RandomState -> randint)
   per index against ours.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sat_accel.data.permutation import Permutation  # noqa: E402
from sat_accel.data.sampler import ShuffledStream, StreamBatchSampler  # noqa: E402


def best_of(fn, repeats: int = 5) -> float:
    """Fastest wall time of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput() -> dict[int, float]:
    """Indices per second for one vectorised call of 10^6 indices."""
    out = {}
    x = np.arange(10**6, dtype=np.int64)
    for n in (10**3, 10**6, 10**9, 10**12):
        perm = Permutation(n, seed=1)
        xs = x % n
        out[n] = len(xs) / best_of(lambda: perm(xs))
    return out


def batch_latency(n: int = 10**9, batch: int = 32, steps: int = 20000) -> tuple[float, float]:
    """(mean seconds per next() of the sampler, seconds per raw 32-index stream call)."""
    sampler = StreamBatchSampler(ShuffledStream(n, 1), batch_size=batch, rank=0, world_size=1)
    iterator = iter(sampler)
    next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    per_next = (time.perf_counter() - start) / steps
    stream = ShuffledStream(n, 1)
    positions = np.arange(batch, dtype=np.int64)
    per_call = best_of(lambda: [stream.indices(positions) for _ in range(1000)]) / 1000
    return per_next, per_call


def sat_mapping_index(index: int, n: int) -> int:
    """SAT's RandomMappingDataset index mapping, re-implemented from its description."""
    rng = random.Random(index)
    seed = [rng.randint(0, 2**32 - 1) for _ in range(16)]
    return int(np.random.RandomState(seed=seed).randint(n))


def sat_vs_ours(count: int, n: int = 10**6) -> tuple[float, float, int]:
    """(SAT seconds per index, ours seconds per index, distinct SAT items among the first n')."""
    sat = best_of(lambda: [sat_mapping_index(i, n) for i in range(count)], repeats=2) / count
    ours = best_of(lambda: Permutation(n, 1)(np.arange(n, dtype=np.int64)), repeats=3) / n
    small = 1000
    distinct = len({sat_mapping_index(i, small) for i in range(small)})
    return sat, ours, distinct


def child(case: str, big: int) -> None:
    """Run one first-batch case in this (fresh) process; print JSON with time and peak RSS."""
    import torch
    from torch.utils.data import DistributedSampler

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if case == "ours":
        first = next(iter(StreamBatchSampler(ShuffledStream(10**9, 1), 32, 0, 1)))
    elif case == "randperm":
        first = torch.randperm(big)[:32].tolist()
    else:
        sampler = DistributedSampler(range(big), num_replicas=1, rank=0, shuffle=True, seed=1)
        iterator = iter(sampler)
        first = [next(iterator) for _ in range(32)]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    traced = None
    if case == "ours":  # RSS is too coarse here: count the bytes Python and numpy allocate
        tracemalloc.start()
        next(iter(StreamBatchSampler(ShuffledStream(10**9, 2), 32, 0, 1)))
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps({"seconds": seconds, "peak_kib": peak - base, "len": len(first),
                      "traced_bytes": traced}))


def first_batch(case: str, big: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, "--big", str(big)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=10**8,
                        help="n for torch.randperm and DistributedSampler")
    parser.add_argument("--sat-indices", type=int, default=2000,
                        help="how many indices to time with SAT's mapping")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.big)

    print("== Permutation throughput (one call, 10^6 indices) ==")
    for n, rate in throughput().items():
        print(f"n = {n:>16,}: {rate / 1e6:7.1f} M indices/s")
    per_next, per_call = batch_latency()
    print("== Per-batch latency, B = 32, n = 10^9 ==")
    print(f"StreamBatchSampler next(): {per_next * 1e6:7.2f} us   raw stream.indices(32): "
          f"{per_call * 1e6:7.1f} us")
    print("== First batch of 32 (fresh process each; peak RSS increase over the imports) ==")
    results = {case: first_batch(case, args.big) for case in ("ours", "randperm", "distributed")}
    labels = {"ours": "ours, n = 10^9", "randperm": f"torch.randperm({args.big:.0e})",
              "distributed": f"DistributedSampler(n = {args.big:.0e})"}
    for case, res in results.items():
        print(f"{labels[case]:<34} {res['seconds'] * 1e3:10.1f} ms   {res['peak_kib']:10,} KiB")
    print(f"ours, traced peak allocation (tracemalloc): {results['ours']['traced_bytes']:,} bytes")
    for case in ("randperm", "distributed"):
        ratio = results[case]["seconds"] / results["ours"]["seconds"]
        print(f"time ratio {case}/ours: {ratio:,.0f}x")
    sat, ours, distinct = sat_vs_ours(args.sat_indices)
    print("== SAT's mapping (random.Random(i) -> RandomState -> randint) vs ours, n = 10^6 ==")
    print(f"SAT: {sat * 1e6:8.1f} us/index   ours: {ours * 1e9:6.1f} ns/index   "
          f"ratio: {sat / ours:,.0f}x")
    print(f"SAT distinct items among 1000 draws over n = 1000: {distinct} (ours: 1000, exact)")


if __name__ == "__main__":
    main()
