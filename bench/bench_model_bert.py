"""Side-by-side CPU timings: sat_accel BertModel vs transformers BertModel, build costs, checkpointing.

    python bench/bench_model_bert.py [--threads 1] [--reps 7]

Prints medians and ratios measured in this one run (interleaved, same weights, same inputs).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from sat_accel.convert.hf_bert import hf_bert_config_to_args, hf_to_sat_bert
from sat_accel.model import BertModel


def timed_pair(fn_a, fn_b, reps: int) -> tuple[float, float]:
    """Median wall times (ms) of ``fn_a()`` and ``fn_b()``, alternated run by run after a warm-up,
    so that noise from other processes on the machine hits both alike."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(reps):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times_a), statistics.median(times_b)


def pair(cfg: dict):
    """A random HF BertModel and our converted copy (eval, dropout 0)."""
    config = transformers.BertConfig(**cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    args = hf_bert_config_to_args(config.to_dict())
    ours = BertModel.from_model_config(args, BertModel.get_args(skip_init=True)).eval()
    ours.del_mixin("bert-final")
    ours.load_state_dict(hf_to_sat_bert(hf.state_dict(), args), strict=True)
    return hf, ours


def bench_forward(reps: int) -> None:
    cfg = dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=4, intermediate_size=1024,
               vocab_size=8000, max_position_embeddings=128)
    hf, ours = pair(cfg)
    b, s = 8, 128
    ids = torch.randint(0, 8000, (b, s))
    tt = torch.zeros_like(ids)
    keep = torch.ones(b, s, dtype=torch.long)
    keep[::2, 96:] = 0
    mask4 = keep[:, None, None, :]
    print(f"forward/backward, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, batch {b}x{s}, padded")
    for mode in ("eval forward", "train fwd+bwd"):
        def run_hf():
            with torch.set_grad_enabled(mode != "eval forward"):
                out = hf(input_ids=ids, token_type_ids=tt, attention_mask=keep).last_hidden_state
                if out.requires_grad:
                    out.float().pow(2).mean().backward()

        def run_ours():
            with torch.set_grad_enabled(mode != "eval forward"):
                out = ours.encode(ids, attention_mask=mask4, token_type_ids=tt)
                if out.requires_grad:
                    out.float().pow(2).mean().backward()

        h, o = timed_pair(run_hf, run_ours, reps)
        print(f"  {mode:14s} transformers {h:8.1f} ms | sat_accel {o:8.1f} ms | ratio ours/hf {o / h:.2f}")


def bench_build() -> None:
    args = BertModel.get_args(num_layers=12, hidden_size=768, num_attention_heads=12, vocab_size=30522)
    print("building bert-base (110M params)")
    results = {}
    for label, overrides, meta in (("random init", {}, False), ("skip_init", {"skip_init": True}, False),
                                   ("meta device", {"skip_init": True}, True)):
        start = time.perf_counter()
        if meta:
            with torch.device("meta"):
                BertModel(argparse.Namespace(**{**vars(args), **overrides}))
        else:
            BertModel(argparse.Namespace(**{**vars(args), **overrides}))
        results[label] = (time.perf_counter() - start) * 1e3
    base = results["random init"]
    for label, ms in results.items():
        print(f"  {label:12s} {ms:8.1f} ms  ({ms / base:.3f} x random init)")


def bench_checkpointing(reps: int) -> None:
    args = BertModel.get_args(num_layers=6, hidden_size=256, num_attention_heads=4, vocab_size=8000,
                              max_sequence_length=256, hidden_dropout=0.0, attention_dropout=0.0)
    ids = torch.randint(0, 8000, (8, 256))
    tt = torch.zeros_like(ids)
    print("activation checkpointing (6 layers, hidden 256, batch 8x256), train step")
    models, saved = {}, {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        models[ckpt] = model = BertModel(args, checkpoint_activations=ckpt).train()
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, token_type_ids=tt)[0].float().logsumexp(-1).mean()
        saved[ckpt] = total / 2**20

    def step(model):
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, token_type_ids=tt)[0].float().logsumexp(-1).mean().backward()

    t0, t1 = timed_pair(lambda: step(models[False]), lambda: step(models[True]), reps)
    m0, m1 = saved[False], saved[True]
    print(f"  saved for backward: {m0:7.1f} MiB -> {m1:7.1f} MiB ({m1 / m0:.2f} x)")
    print(f"  step time:          {t0:7.1f} ms  -> {t1:7.1f} ms  ({t1 / t0:.2f} x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=9)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {opts.threads}")
    bench_forward(opts.reps)
    bench_build()
    bench_checkpointing(max(3, opts.reps // 2))


if __name__ == "__main__":
    main()
