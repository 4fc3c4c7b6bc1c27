"""Why --compile gains little on CPU: bench/compile_step.py's small BERT in a plain torch loop (no training_main),
eager vs `model.compile()` vs `torch.compile` of model + loss vs `mode="max-autotune"`, each in a fresh process,
then a torch.profiler breakdown of the eager step (matrix multiplies vs the rest).

    python bench/compile_breakdown.py [--threads 2 --steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import compile_step as cs  # noqa: E402
from sat_accel import get_args  # noqa: E402
from sat_accel.model import BertModel  # noqa: E402

VARIANTS = ["eager", "model_compile", "whole_compile", "max_autotune"]
GEMM = ("aten::mm", "aten::addmm", "aten::bmm")


class Sizes:
    layers, hidden, seq, batch, vocab = 4, 256, 128, 16, 8192


def build(variant: str):
    torch.manual_seed(0)
    model = BertModel(get_args(cs.model_flags(Sizes)))
    ids = torch.randint(0, Sizes.vocab, (Sizes.batch, Sizes.seq), generator=torch.Generator().manual_seed(0))
    if variant == "whole_compile":
        whole = torch.compile(lambda: cs.mlm_loss(model, ids, ids))
        return model, whole
    if variant != "eager":
        model.compile(**({"mode": "max-autotune"} if variant == "max_autotune" else {}))
    return model, lambda: cs.mlm_loss(model, ids, ids)


def training_step(variant: str):
    """One train step of the variant's model (loss, backward, clipping, fused AdamW), as a closure."""
    model, loss_fn = build(variant)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return step


def step_times(variant: str, steps: int) -> list[float]:
    step, times = training_step(variant), []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def eager_breakdown() -> dict:
    from torch.profiler import ProfilerActivity, profile

    step = training_step("eager")
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    share = {"matrix multiplies": sum(v for k, v in self_us.items() if k in GEMM),
             "log_softmax (the loss)": sum(v for k, v in self_us.items() if "log_softmax" in k),
             "attention (SDPA)": sum(v for k, v in self_us.items() if "scaled_dot_product" in k)}
    share["everything else"] = total - sum(share.values())
    return {k: v / total for k, v in share.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process's one variant
    o = parser.parse_args(argv)
    torch.set_num_threads(o.threads)
    if o.variant:
        times = step_times(o.variant, o.steps)
        print(json.dumps({"first_s": times[0], "step_ms": 1000 * statistics.median(times[3:])}), flush=True)
        return
    results = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, f"--threads={o.threads}", f"--steps={o.steps}",
                              "--variant", variant], check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        ratio = results[variant]["step_ms"] / results["eager"]["step_ms"]
        print(f"{variant}: step {results[variant]['step_ms']:.0f} ms ({ratio:.3f}x eager), first step "
              f"{results[variant]['first_s']:.1f} s", flush=True)
    print("eager step, share of CPU time: " + ", ".join(f"{k} {v:.1%}" for k, v in eager_breakdown().items()))


if __name__ == "__main__":
    main()
