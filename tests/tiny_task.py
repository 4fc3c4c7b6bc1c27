"""A tiny, learnable task shared by the training tests and the multi-process scripts.

Examples are (x, y) with y = a fixed random linear map of x plus a class label from its sign, so a
small MLP or transformer learns it in a few dozen steps. Everything is seeded and local.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 256, dim: int = 8, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=gen)
        weight = torch.randn(dim, generator=gen)
        self.y = (self.x @ weight > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


def create_dataset(path, args):
    n = int(path.split(":")[1]) if ":" in path else 256
    return TinyDataset(n=n, seed=0 if "valid" not in path else 1)


class TinyModel(torch.nn.Module):
    """An MLP with a layernorm (so param groups matter); `args` makes it buildable by training_main."""

    def __init__(self, args=None, dim: int = 8, hidden: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.LayerNorm(hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


class TinyTransformer(torch.nn.Module):
    """Two encoder layers without dropout: attention biases make the equivalence tests honest."""

    def __init__(self, args=None, dim: int = 8, hidden: int = 32):
        super().__init__()
        self.inp = torch.nn.Linear(1, hidden)
        layer = torch.nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.out = torch.nn.Linear(hidden, 2)

    def forward(self, x):
        h = self.encoder(self.inp(x.unsqueeze(-1)))
        return self.out(h.mean(dim=1))


def forward_step(data_iterator, model, args, timers):
    timers("batch generator").start()
    batch = next(data_iterator)
    timers("batch generator").stop()
    logits = model(batch["x"])
    loss = F.cross_entropy(logits, batch["y"])
    acc = (logits.argmax(-1) == batch["y"]).float().mean()
    return loss, {"acc": acc}


def forward_step_eval(data_iterator, model, args, timers):
    batch = next(data_iterator)
    logits = model(batch["x"])
    loss = F.cross_entropy(logits, batch["y"])
    return loss, {"acc": (logits.argmax(-1) == batch["y"]).float().mean(),
                  "eval_correct": (logits.argmax(-1) == batch["y"]).float(), "eval_count": torch.ones(len(batch["y"]))}


def handle_metrics(metrics: dict) -> dict:
    """Gathered from every rank: per-example correctness and counts."""
    return {"acc_all": metrics["eval_correct"].mean(), "n_examples": metrics["eval_count"].sum()}


def read_metrics(path) -> list[dict]:
    import json

    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def worker_args(argv: list[str], default_model: str):
    """Start of a launched test script: takes `--out DIR` and `--model NAME` (a class of this module) off the
    command line and parses the rest with get_args, metrics under DIR. Returns (args, out, model class)."""
    from sat_accel import get_args

    argv = list(argv)
    out = _pop_flag(argv, "--out")
    model_name = _pop_flag(argv, "--model") or default_model
    args = get_args(argv + ["--summary-dir", out, "--experiment-name", "run", "--no-progress"])
    return args, out, globals()[model_name]


def _pop_flag(argv: list[str], flag: str) -> str | None:
    if flag not in argv:
        return None
    at = argv.index(flag)
    value = argv[at + 1]
    del argv[at:at + 2]
    return value


def finish_worker(args, model, out) -> None:
    """End of a launched test script: rank 0 writes <out>/final.safetensors and <out>/DONE, every rank
    meets at a barrier and leaves with os._exit(0), because gloo can abort at interpreter exit."""
    import os

    from safetensors.torch import save_file

    if args.rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "final.safetensors"))
        with open(os.path.join(out, "DONE"), "w", encoding="utf-8") as handle:
            handle.write(args.experiment_name)
    exit_worker()


def exit_worker() -> None:
    """Barrier, flush, os._exit(0): a launched worker's clean way out."""
    import os
    import sys

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- variable-length token task (--group-by-length)
class TinyTokens(torch.utils.data.Dataset):
    """Token sequences of 3..40 tokens (unpadded lists) labelled by whether token 1 outnumbers token 2."""

    def __init__(self, n: int = 256, seed: int = 0, vocab: int = 16):
        gen = torch.Generator().manual_seed(seed)
        lengths = torch.randint(3, 41, (n,), generator=gen)
        self.ids = [torch.randint(1, vocab, (int(k),), generator=gen).tolist() for k in lengths]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "label": int(ids.count(1) > ids.count(2)),
                "index": index}


def create_token_dataset(path, args):
    n = int(path.split(":")[1]) if ":" in path else 256
    return TinyTokens(n=n, seed=0 if "valid" not in path else 1)


class TinyTokenModel(torch.nn.Module):
    """Embedding + two encoder layers (no dropout) + masked mean pool: padding changes nothing."""

    def __init__(self, args=None, vocab: int = 16, hidden: int = 32):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        layer = torch.nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.out = torch.nn.Linear(hidden, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.bool()
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=~mask)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.out(pooled)


SEEN_INDICES: list[list[int]] = []  # examples per training micro-batch, in order (in-process tests read it)


def forward_step_tokens(data_iterator, model, args, timers):
    batch = next(data_iterator)
    if model.training:
        SEEN_INDICES.append(batch["index"].tolist())
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = F.cross_entropy(logits, batch["label"])
    return loss, {"padded_len": torch.tensor(float(batch["input_ids"].shape[1]))}


# ---------------------------------------------------------------- "token 7 occurs" (from-scratch BERT learnability)
MARKER_TASK = dict(vocab=64, seq=12, cls=1, marker=7)


def marker_examples(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [n, seq], labels [n]): label 1 iff token 7 occurs after [CLS] (id 1); balanced, ids from [3, 64)."""
    vocab, seq, cls, marker = (MARKER_TASK[k] for k in ("vocab", "seq", "cls", "marker"))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab - 1, (n, seq), generator=gen)
    ids[ids >= marker] += 1  # never the marker by chance
    labels = torch.randint(0, 2, (n,), generator=gen)
    where = torch.randint(1, seq, (n,), generator=gen)
    ids[labels.bool(), where[labels.bool()]] = marker
    ids[:, 0] = cls
    return ids, labels


class MarkerDataset(torch.utils.data.Dataset):
    """`marker_examples` as a map-style dataset of {"input_ids", "label"}."""

    def __init__(self, n: int, seed: int = 0):
        self.ids, self.labels = marker_examples(n, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.ids[index], "label": self.labels[index]}


def tiny_bert_classifier(args):
    """A 2-layer BertModel (the mixin hooks: token types, SAT's MLPHeadMixin head) sized by small flags."""
    from sat_accel.model import BertModel, MLPHeadMixin

    model = BertModel(args)
    model.del_mixin("bert-final")
    model.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 64, 2, init_std=0.02))
    return model


BERT_FLAGS = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--vocab-size", "16",
              "--max-sequence-length", "64", "--hidden-dropout", "0", "--attention-dropout", "0"]


class TinyBert(torch.nn.Module):
    """training_main builds model_cls(args): the BERT classifier above, [CLS]-position logits."""

    def __init__(self, args):
        super().__init__()
        self.bert = tiny_bert_classifier(args)

    def forward(self, input_ids, attention_mask):
        logits, *_ = self.bert(input_ids=input_ids, attention_mask=attention_mask[:, None, None, :],
                               token_type_ids=torch.zeros_like(input_ids))
        return logits[:, 0]
