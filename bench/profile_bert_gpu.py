"""Where BERT-base's iteration time goes for sat_accel, the hand-written Accelerate loop and HF Trainer.

    python bench/profile_bert_gpu.py --out DIR [--smoke]

Runs the three BERT-base runners of scripts/gpu_check.py (each in its own process) and profiles
iterations 31-40 of each with torch.profiler, through the loss function all three call once per
iteration. Writes DIR/<runner>.txt (top kernels by device time) and prints, per runner, wall ms per
iteration, device-busy ms per iteration (sum of kernel times) and their difference (time the GPU waited).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]
RUNNERS = ("bert_sat", "bert_accelerate", "bert_trainer")
FIRST, LAST = 31, 40


def profile_runner(name: str, out: Path, smoke: bool) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import gpu_check

    original_loss = gpu_check.bert_loss
    state = {"calls": 0}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def loss_with_profiler(model, input_ids, labels):
        state["calls"] += 1
        if state["calls"] == FIRST:
            sync()
            state["profiler"] = profile(activities=activities)
            state["profiler"].__enter__()
            state["start"] = time.perf_counter()
        if state["calls"] == LAST + 1:
            sync()
            state["wall_s"] = time.perf_counter() - state["start"]
            state["profiler"].__exit__(None, None, None)
        return original_loss(model, input_ids, labels)

    gpu_check.bert_loss = loss_with_profiler
    shape = gpu_check.bert_shape(smoke)
    shape["steps"] = max(shape["steps"], LAST + 5)
    gpu_check.bert_shape = lambda smoke: shape
    gpu_check.CASES[name](out / name, smoke)
    events = state["profiler"].key_averages()
    device = torch.cuda.is_available()
    key = "self_device_time_total" if device else "self_cpu_time_total"
    busy_us = sum(getattr(e, key, 0) for e in events if not device or e.device_type.name == "CUDA")
    iters = LAST - FIRST + 1
    result = {"runner": name, "wall_ms_per_iter": 1000 * state["wall_s"] / iters,
              "device_busy_ms_per_iter": busy_us / 1000 / iters}
    result["idle_ms_per_iter"] = result["wall_ms_per_iter"] - result["device_busy_ms_per_iter"]
    (out / f"{name}.txt").write_text(events.table(sort_by=key, row_limit=25) + "\n" + json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU")
    parser.add_argument("--runner", choices=RUNNERS, help="(internal) profile one runner in this process")
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.runner:
        profile_runner(opts.runner, out, opts.smoke)
        return
    for name in RUNNERS:
        subprocess.run([sys.executable, __file__, "--out", str(out), "--runner", name]
                       + (["--smoke"] if opts.smoke else []), check=False, timeout=120)


if __name__ == "__main__":
    main()
