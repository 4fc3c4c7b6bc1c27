"""Finetune a GPT-2 with the language-model loss through training_main, reload it, generate — offline.

    python examples/gpt2_finetune.py                 # a tiny GPT-2 in Hugging Face format + synthetic text
    python examples/gpt2_finetune.py --md-type path/to/hf_gpt2_folder --train-data my.txt   # your own

The default "pretrained" model is a small random transformers GPT2LMHeadModel written as a Hugging Face
folder (what a download gives you), so the whole path runs without a network: ``GPT2Model.from_pretrained``
converts the folder once, ``training_main`` finetunes it on windows of the text with next-token
cross-entropy, the checkpoint is reloaded with ``AutoModel.from_pretrained`` and ``filling_sequence``
continues a prompt greedily over the KV cache. Text is tokenised per character unless the model folder
has a tokenizer. About 30 s on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
from typing import Any

import torch
import torch.nn.functional as F

from sat_accel import get_args, training_main
from sat_accel.generation import BaseStrategy, filling_sequence
from sat_accel.model import AutoModel, CachedAutoregressiveMixin, GPT2Model

logger = logging.getLogger("gpt2_finetune")

RECIPE_DEFAULTS: dict[str, Any] = dict(
    experiment_name="finetune-gpt2", mode="finetune", train_iters=120, batch_size=16, lr=3e-3, warmup=0.05,
    lr_decay_style="cosine", split="1", eval_interval=100000, log_interval=20, save="checkpoints",
    hidden_dropout=0.0, attention_dropout=0.0)
ANIMALS, VERBS, PLACES = ("cat", "dog", "fox", "owl"), ("sits", "naps", "waits", "hides"), ("mat", "rug", "box", "bed")


# ---------------------------------------------------------------- data and tokens
def synthetic_text(path: str, lines: int = 400, seed: int = 0) -> str:
    """Write 'the <animal> <verb> on the <place>.' lines (a tiny, learnable language) once; return the path."""
    if not os.path.isfile(path):
        rng = random.Random(seed)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for _ in range(lines):
                f.write(f"the {rng.choice(ANIMALS)} {rng.choice(VERBS)} on the {rng.choice(PLACES)}.\n")
    return path


class CharTokenizer:
    """Characters of the training text -> ids (0 = unknown)."""

    def __init__(self, text: str):
        self.chars = ["\0", *sorted(set(text))]
        self.ids = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, 0) for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def __len__(self) -> int:
        return len(self.chars)


def tokenizer_for(args: argparse.Namespace):
    """The model folder's Hugging Face tokenizer when it has one, else characters of the training text."""
    if args.md_type and os.path.isfile(os.path.join(args.md_type, "tokenizer_config.json")):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(args.md_type)
    with open(args.train_data[0], encoding="utf-8") as f:
        return CharTokenizer(f.read())


class Windows(torch.utils.data.Dataset):
    """Consecutive windows of ``length`` tokens of one text file: {"input_ids": [length]}."""

    def __init__(self, ids: list[int], length: int):
        self.ids, self.length = torch.tensor(ids), length

    def __len__(self) -> int:
        return max(0, len(self.ids) - self.length) // (self.length // 2)

    def __getitem__(self, i: int) -> dict:
        start = i * (self.length // 2)
        return {"input_ids": self.ids[start:start + self.length]}


def create_dataset_function(path: str, args: argparse.Namespace) -> Windows:
    """SAT's hook: a text file -> overlapping token windows of --max-seq-len."""
    with open(path, encoding="utf-8") as f:
        return Windows(tokenizer_for(args).encode(f.read()), args.max_seq_len)


# ---------------------------------------------------------------- the step
def causal_lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy under a causal mask (SAT: a None mask would mean full attention)."""
    mask = torch.ones(ids.shape[1], ids.shape[1], device=ids.device).tril_()[None, None]
    logits, *_ = model(ids, None, mask)
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())


def forward_step(data_iterator, model, args: argparse.Namespace, timers):
    """SAT's forward_step: the language-model loss of one batch of windows."""
    timers("batch generator").start()
    ids = next(data_iterator)["input_ids"]
    timers("batch generator").stop()
    return causal_lm_loss(model, ids), {}


# ---------------------------------------------------------------- model, generation, main
def tiny_hf_gpt2(folder: str, vocab_size: int, seed: int = 0) -> str:
    """A small random transformers GPT-2 written as a Hugging Face folder (stands in for a download)."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        import transformers

        torch.manual_seed(seed)
        config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=64)
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def generate(model: torch.nn.Module, tokenizer, prompt: str, new_tokens: int = 24) -> str:
    """Greedy continuation of ``prompt`` with SAT's filling_sequence over the KV cache."""
    if "auto-regressive" not in model.mixins:
        model.add_mixin("auto-regressive", CachedAutoregressiveMixin())
    ids = torch.tensor(tokenizer.encode(prompt))
    seq = torch.cat([ids, torch.full((new_tokens,), -1)]).to(next(model.parameters()).device)
    tokens, _ = filling_sequence(model.eval(), seq, 1, BaseStrategy(top_k=1))
    return tokenizer.decode(tokens[0].tolist())


class RecipeParser(argparse.ArgumentParser):
    """Applies RECIPE_DEFAULTS once get_args has added SAT's flags (the command line still wins)."""

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 (argparse's signature)
        self.set_defaults(**RECIPE_DEFAULTS)
        return super().parse_known_args(args, namespace)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """SAT's flags + --md-type/--max-seq-len/--data-root, with RECIPE_DEFAULTS (the command line wins)."""
    parser = RecipeParser(description="Finetune a GPT-2 with sat_accel's training_main.")
    parser.add_argument("--md-type", default=None, help="Hugging Face GPT-2 folder (default: a tiny random one)")
    parser.add_argument("--max-seq-len", type=int, default=32, help="tokens per training window")
    parser.add_argument("--data-root", default="data", help="where the synthetic text and tiny model go")
    return get_args(argv, parser=parser)


def main(argv: list[str] | None = None) -> tuple[torch.nn.Module, str]:
    """Finetune, save, reload with AutoModel and generate; returns (reloaded model, generated text)."""
    args = parse_args(argv)
    if not args.train_data:
        args.train_data = [synthetic_text(os.path.join(args.data_root, "gpt2_synthetic.txt"))]
    tokenizer = tokenizer_for(args)
    md_type = args.md_type or tiny_hf_gpt2(os.path.join(args.data_root, "tiny-gpt2-hf"), len(tokenizer))
    model, args = GPT2Model.from_pretrained(md_type, args)  # HF folder: converted once, cached
    print("before finetuning:", repr(generate(model, tokenizer, "the cat ")))
    model.del_mixin("auto-regressive")
    training_main(args, model_cls=(model, args), forward_step_function=forward_step,
                  create_dataset_function=create_dataset_function)
    reloaded, _ = AutoModel.from_pretrained(os.path.join(args.save, args.experiment_name))
    text = generate(reloaded, tokenizer, "the cat ")
    print("after finetuning: ", repr(text))
    return reloaded, text


if __name__ == "__main__":
    main()
