"""--compile on CPU: a small BERT train step, training_main eager vs --compile vs HF Trainer (eager and
torch_compile=True), same model (sat_accel BertModel + MLM loss), batches, fused AdamW and clipping; runners
alternate within each round. Per-step time = median gap between consecutive step starts after a warm-up (sat:
stamped at forward_step entry; Trainer: on_step_begin); compile time = first step's time minus that median
(Inductor's caches are disabled, so every compiled runner compiles from scratch). With --isolate every run is a
fresh process of this script (no compiler state warmed by an earlier runner: fair compile times).

    python bench/compile_step.py --rounds 2 [--layers 4 --hidden 256 --seq 128 --batch 16 --steps 30] [--isolate]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sat_accel import get_args, training_main  # noqa: E402
from sat_accel.model import BertModel  # noqa: E402

WARMUP = 3


def model_flags(o) -> list[str]:
    return ["--num-layers", str(o.layers), "--hidden-size", str(o.hidden), "--num-attention-heads", str(o.hidden // 64),
            "--vocab-size", str(o.vocab), "--max-sequence-length", str(o.seq), "--layernorm-order", "post",
            "--hidden-dropout", "0", "--attention-dropout", "0"]


class Tokens(torch.utils.data.Dataset):
    def __init__(self, o):
        self.ids = torch.randint(0, o.vocab, (o.batch * (o.steps + 2), o.seq), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def mlm_loss(model, input_ids, labels):
    logits, *_ = model(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


def timing(stamps: list[float]) -> dict:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    median = statistics.median(gaps[WARMUP:])
    return {"step_ms": median * 1000, "first_step_s": gaps[0], "compile_s": gaps[0] - median}


def sat_runner(compiled: bool):
    def run(o) -> dict:
        stamps: list[float] = []

        def forward_step(data_iterator, model, args, timers):
            stamps.append(time.perf_counter())
            batch = next(data_iterator)
            return mlm_loss(model, batch["input_ids"], batch["labels"])

        with tempfile.TemporaryDirectory() as tmp:
            args = get_args(model_flags(o) + [
                "--train-data", "x", "--split", "1", "--train-iters", str(o.steps), "--batch-size", str(o.batch),
                "--num-workers", "0", "--log-interval", str(o.steps), "--warmup", "0", "--lr-decay-style", "constant",
                "--no-progress", "--summary-dir", tmp] + (["--compile"] if compiled else []))
            torch.manual_seed(0)
            training_main(args, BertModel, forward_step, lambda path, args: Tokens(o))
        return timing(stamps)
    return run


def trainer_runner(compiled: bool):
    def run(o) -> dict:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        stamps: list[float] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                stamps.append(time.perf_counter())

        class WithLoss(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = BertModel(get_args(model_flags(o)))

            def forward(self, input_ids, labels):
                return {"loss": mlm_loss(self.bert, input_ids, labels)}

        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            targs = TrainingArguments(output_dir=tmp, max_steps=o.steps, per_device_train_batch_size=o.batch,
                                      learning_rate=1e-4, lr_scheduler_type="constant", max_grad_norm=1.0,
                                      logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
                                      dataloader_num_workers=0, use_cpu=True, torch_compile=compiled)
            Trainer(model=WithLoss(), args=targs, train_dataset=Tokens(o), callbacks=[Clock()]).train()
        return timing(stamps)
    return run


RUNNERS = {"sat_eager": sat_runner(False), "sat_compiled": sat_runner(True),
           "trainer_eager": trainer_runner(False), "trainer_compiled": trainer_runner(True)}


def isolated(o, name: str) -> dict:
    """One runner in a fresh process of this script, with the same sizes."""
    flags = [f"--{k}={getattr(o, k)}" for k in ("layers", "hidden", "seq", "batch", "vocab", "steps", "threads")]
    out = subprocess.run([sys.executable, __file__, *flags, "--runners", name, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS))
    parser.add_argument("--isolate", action="store_true", help="run every runner in a fresh process")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # --isolate's child: print the result
    o = parser.parse_args(argv)
    torch.set_num_threads(o.threads)
    logging.getLogger("sat_accel").setLevel(logging.WARNING)
    if o.json:
        print(json.dumps(RUNNERS[o.runners[0]](o)), flush=True)
        return
    rounds = []
    for r in range(o.rounds):
        names = o.runners if r % 2 == 0 else o.runners[::-1]
        row = {}
        for name in names:
            torch._dynamo.reset()
            row[name] = isolated(o, name) if o.isolate else RUNNERS[name](o)
            print(f"[round {r}] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row[name].items()), flush=True)
        rounds.append(row)
    med = {n: {k: statistics.median(r[n][k] for r in rounds) for k in rounds[0][n]} for n in o.runners}
    print("medians: " + "; ".join(f"{n} step {v['step_ms']:.1f} ms, compile {v['compile_s']:.1f} s" for n, v in med.items()))
    pairs = [("sat_compiled", "sat_eager"), ("trainer_compiled", "trainer_eager"), ("sat_compiled", "trainer_compiled"),
             ("sat_eager", "trainer_eager")]
    for a, b in pairs:
        if a in med and b in med:
            ratio = statistics.median(r[a]["step_ms"] / r[b]["step_ms"] for r in rounds)
            print(f"step time {a}/{b}: {ratio:.3f} (median of within-round ratios)", flush=True)


if __name__ == "__main__":
    main()
