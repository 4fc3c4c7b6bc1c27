"""Per-step cost of the training loop: training_main vs a minimal Accelerate loop, HF Trainer and raw torch.

The same model, data order, fused AdamW and clipping for every runner. A forward pre-hook stamps the time of
every forward call; the per-step time is the median gap between consecutive calls after a warm-up,
so set-up costs (process group, loaders, Trainer init) are excluded. Runners alternate within each
round and ratios are taken within a round, because this machine drifts between rounds.

    python bench/loop_overhead.py [--rounds 3] [--sizes tiny small]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

SIZES = {  # layers, hidden, seq, batch, steps
    "tiny": dict(layers=2, hidden=64, seq=32, batch=8, steps=300),
    "small": dict(layers=4, hidden=256, seq=128, batch=16, steps=30),
}
WARMUP = 5


class Encoder(torch.nn.Module):
    def __init__(self, layers: int, hidden: int, seq: int, vocab: int = 1000):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        layer = torch.nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=4 * hidden, dropout=0.0,
                                                 batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(hidden, 2)
        self.stamps: list[float] = []
        self.register_forward_pre_hook(lambda *_: self.stamps.append(time.perf_counter()))

    def forward(self, input_ids, labels=None):
        logits = self.head(self.encoder(self.embed(input_ids)).mean(dim=1))
        if labels is None:
            return logits
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 1000, (n, seq), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def per_step_ms(model: Encoder) -> float:
    gaps = [b - a for a, b in zip(model.stamps[WARMUP:], model.stamps[WARMUP + 1:])]
    return statistics.median(gaps) * 1000


def make(cfg):
    torch.manual_seed(0)
    return Encoder(cfg["layers"], cfg["hidden"], cfg["seq"]), TokenData(cfg["batch"] * cfg["steps"], cfg["seq"])


def run_raw(cfg) -> float:
    model, data = make(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as Trainer and training_main
    for batch in torch.utils.data.DataLoader(data, batch_size=cfg["batch"]):
        loss = model(**batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return per_step_ms(model)


def run_accelerate(cfg) -> float:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model, data = make(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as Trainer and training_main
    loader = torch.utils.data.DataLoader(data, batch_size=cfg["batch"])
    wrapped, opt, loader = accelerator.prepare(model, opt, loader)
    for batch in loader:
        loss = wrapped(**batch)["loss"]
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return per_step_ms(model)


def run_training_main(cfg) -> float:
    from sat_accel import get_args, training_main

    model, data = make(cfg)

    def forward_step(data_iterator, model, args, timers):
        return model(**next(data_iterator))["loss"]

    with tempfile.TemporaryDirectory() as tmp:
        args = get_args(["--train-iters", str(cfg["steps"]), "--batch-size", str(cfg["batch"]), "--train-data", "x",
                         "--split", "1", "--num-workers", "0", "--log-interval", str(cfg["steps"]), "--warmup", "0",
                         "--lr-decay-style", "constant", "--no-progress", "--summary-dir", tmp])
        training_main(args, model, forward_step, lambda path, args: data)
    return per_step_ms(model)


def run_trainer(cfg) -> float:
    from transformers import Trainer, TrainingArguments

    model, data = make(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch"],
                                  learning_rate=1e-4, lr_scheduler_type="constant", max_grad_norm=1.0,
                                  logging_steps=cfg["steps"], save_strategy="no", report_to=[], disable_tqdm=True,
                                  dataloader_num_workers=0, use_cpu=not torch.cuda.is_available())
        Trainer(model=model, args=targs, train_dataset=data).train()
    return per_step_ms(model)


RUNNERS = {"a_accelerate": run_accelerate, "b_training_main": run_training_main, "c_hf_trainer": run_trainer,
           "d_raw_torch": run_raw}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    opts = parser.parse_args(argv)
    import logging

    logging.getLogger("sat_accel").setLevel(logging.WARNING)
    for size in opts.sizes:
        cfg = SIZES[size]
        rounds = []
        for r in range(opts.rounds):
            names = list(RUNNERS) if r % 2 == 0 else list(reversed(RUNNERS))
            rounds.append({name: RUNNERS[name](cfg) for name in names})
            row = rounds[-1]
            print(f"[{size} round {r}] " + "  ".join(f"{k}={v:.3f}ms" for k, v in sorted(row.items())), flush=True)
        ratios = {
            "b/a": statistics.median(r["b_training_main"] / r["a_accelerate"] for r in rounds),
            "b/c": statistics.median(r["b_training_main"] / r["c_hf_trainer"] for r in rounds),
            "b/d": statistics.median(r["b_training_main"] / r["d_raw_torch"] for r in rounds),
            "c/d": statistics.median(r["c_hf_trainer"] / r["d_raw_torch"] for r in rounds),
            "a/d": statistics.median(r["a_accelerate"] / r["d_raw_torch"] for r in rounds),
        }
        medians = {k: statistics.median(r[k] for r in rounds) for k in RUNNERS}
        print(f"{size}: per-step median ms " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
        print(f"{size}: ratios (median of within-round ratios) " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
