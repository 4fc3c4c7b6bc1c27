"""What DeepSpeed costs on CPU: 2 gloo processes, DDP vs ZeRO-1/2/3 and ZeRO-2 + optimizer offload, same
model, data, flags and global batch, launched in turns (DDP, Z1, Z2, Z3, Z2-offload, then again) so that
machine noise hits all alike. Reports the median training samples/s over the log intervals after the
first (warm-up), the best of the rounds, and the ratio to DDP.

    python bench/scaleout_cpu.py [--rounds 2] [--iters 30] [--hidden 128]
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from launch import command, launch_env  # noqa: E402

CONFIGS = {"DDP": [], "ZeRO-1": ["--zero-stage", "1"], "ZeRO-2": ["--zero-stage", "2"],
           "ZeRO-3": ["--zero-stage", "3"], "ZeRO-2 offload": ["--zero-stage", "2"]}
OFFLOAD_ENV = {"ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}


def one_run(name: str, opts, out: Path) -> float:
    """Median samples/s after the first log interval of one 2-process run."""
    argv = ["--train-data", "tiny:4096", "--split", "1", "--train-iters", str(opts.iters), "--log-interval", "5",
            "--batch-size", "16", "--num-workers", "0", "--model", "sat", "--num-layers", "4", "--hidden-size",
            str(opts.hidden), "--num-attention-heads", "4", "--vocab-size", "8", "--max-sequence-length", "8",
            "--hidden-dropout", "0", "--attention-dropout", "0", *CONFIGS[name], "--out", str(out)]
    env = {**launch_env(), **(OFFLOAD_ENV if "offload" in name else {})}
    cmd = command(2, "torchrun", script=ROOT / "tests" / "test_deepspeed.py") + argv
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    files = glob.glob(str(out / "run-*" / "metrics.jsonl"))
    if not files:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    with open(files[0], encoding="utf-8") as handle:
        rates = [r["samples_per_s"] for r in map(json.loads, handle) if r["split"] == "train"]
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=128)
    opts = parser.parse_args()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(opts.rounds):
            for name in CONFIGS:
                start = time.time()
                rate = one_run(name, opts, Path(tmp) / f"{round_}-{name.replace(' ', '_')}")
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_ + 1} {name:15s} {rate:8.1f} samples/s  (run {time.time() - start:.0f} s)",
                      flush=True)
    print(f"\n{'config':15s} {'samples/s':>10s} {'vs DDP':>8s}")
    for name, rate in best.items():
        print(f"{name:15s} {rate:10.1f} {rate / best['DDP']:8.3f}")


if __name__ == "__main__":
    main()
