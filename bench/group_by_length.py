"""--group-by-length on the BoolQ example: real tokens/s and time to accuracy, sat_accel ungrouped vs grouped vs
HF Trainer with group_by_length=True — same model (MiniLM-L6 + SAT's MLP head, frozen word embeddings), same
data, batch, steps, lr schedule, AdamW (fused), clipping and DataLoader workers; runners interleaved per round.

Timing: a forward pre-hook on the model stamps every training forward call and counts its real tokens (the
attention mask's ones); tokens/s = real tokens of the training steps / the time between them, leaving out the
gaps that hold an evaluation. Time to accuracy = training steps until the first evaluation >= --target, times
the median step time (evaluation time excluded).

    python bench/group_by_length.py --data default --steps 150 --eval-every 50 --rounds 1
    python bench/group_by_length.py --data boolq-lengths --steps 30 --rounds 2

--data default is the example's generated data (39-42 tokens: almost nothing to group); boolq-lengths appends
neutral sentences to every passage so that lengths spread like real BoolQ's (~40-256 tokens, median ~130,
truncated at the example's --max-seq-len 256), with the same questions and answers.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]
import bert_boolq as ex  # noqa: E402

FILLER = ["The area around it is quiet for most of the year.", "Visitors often walk along the path nearby.",
          "Local guides tell many stories about the region.", "The road to the town was paved much later.",
          "Several families have lived in the valley for generations.", "A small market opens there each week.",
          "The climate is mild and the winters are short.", "Old maps show a river that has since moved."]


class Clock:
    """Forward pre-hook: (time, training, real tokens) of every call."""

    def __init__(self, model: torch.nn.Module):
        self.events: list[tuple[float, bool, int]] = []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        tokens = int((mask != 0).sum()) if mask is not None else 0
        self.events.append((time.perf_counter(), module.training, tokens))

    def steps(self, warmup: int) -> list[tuple[float, int]]:
        """(seconds, real tokens) of each training step after `warmup` whose gap holds no evaluation."""
        out, train_seen = [], 0
        for (t0, training, tokens), (t1, next_training, _) in zip(self.events, self.events[1:]):
            if training:
                train_seen += 1
                if train_seen > warmup and next_training:
                    out.append((t1 - t0, tokens))
        return out


def summarise(clock: Clock, accuracy: dict[int, float], target: float, warmup: int) -> dict:
    steps = clock.steps(warmup)
    seconds, tokens = sum(s for s, _ in steps), sum(t for _, t in steps)
    median = statistics.median(s for s, _ in steps)
    reached = next((it for it, acc in sorted(accuracy.items()) if acc >= target), None)
    return {"tokens_per_s": tokens / seconds, "median_step_s": median, "accuracy": accuracy,
            "time_to_target_s": reached * median if reached else None, "steps_to_target": reached}


def sat_runner(grouped: bool):
    def run(data: dict, opts, tmp: Path) -> dict:
        argv = ["--train-data", data["train"], "--valid-data", data["validation"], "--train-iters", str(opts.steps),
                "--eval-interval", str(opts.eval_every or opts.steps * 10), "--save", "", "--data-root", str(tmp),
                "--summary-dir", str(tmp / "runs"), "--no-progress", "--log-interval", str(opts.steps),
                "--cpu-threads", str(opts.threads), "--seed", str(opts.seed)]
        argv += ["--group-by-length"] if grouped else []
        args = ex.parse_args(argv)
        ex.set_cpu_threads(args)
        model, args = ex.build_model(args)
        clock = Clock(model)
        ex.training_main(args, model_cls=(model, args), forward_step_function=ex.forward_step,
                         create_dataset_function=ex.create_dataset_function, handle_metrics_function=ex.handle_metrics,
                         forward_step_eval=ex.forward_step_eval)
        records = [json.loads(line) for line in next((tmp / "runs").rglob("metrics.jsonl")).open()]
        accuracy = {r["iteration"]: r["acc"] for r in records if r["split"] == "valid"}
        return summarise(clock, accuracy, opts.target, opts.warmup)
    return run


class TrainerModel(torch.nn.Module):
    """The example's model and loss behind Trainer's interface."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        pred = ex.cls_logits(self.model, {"input_ids": input_ids, "attention_mask": attention_mask,
                                          "token_type_ids": token_type_ids})
        return {"loss": F.binary_cross_entropy_with_logits(pred, labels.float()), "logits": pred}


def unpadded(dataset):
    """The example's rows cut back to their real tokens, with a `length` column (what Trainer groups by)."""
    def trim(row):
        n = int(sum(row["attention_mask"]))
        return {"input_ids": row["input_ids"][:n], "token_type_ids": row["token_type_ids"][:n],
                "attention_mask": row["attention_mask"][:n], "labels": int(row["label"]), "length": n}
    return dataset.with_format(None).map(trim, remove_columns=dataset.column_names)


def run_trainer(data: dict, opts, tmp: Path) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    args = ex.parse_args(["--train-data", data["train"], "--data-root", str(tmp), "--cpu-threads", str(opts.threads),
                          "--seed", str(opts.seed)])
    ex.set_cpu_threads(args)
    model, args = ex.build_model(args)
    model.disable_untrainable_params()  # as training_main does for the example
    clock = Clock(model)
    train, valid = (unpadded(ex.create_dataset_function(data[k], args)) for k in ("train", "validation"))

    def accuracy(pred):
        return {"acc": float(((pred.predictions > 0).astype(int) == pred.label_ids).mean())}

    targs = TrainingArguments(
        output_dir=str(tmp / "trainer"), max_steps=opts.steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=round(args.warmup * opts.steps), weight_decay=args.weight_decay, max_grad_norm=args.gradient_clipping,
        train_sampling_strategy="group_by_length", length_column_name="length", eval_strategy="steps" if opts.eval_every else "no",
        eval_steps=opts.eval_every or None, save_strategy="no", report_to=[], disable_tqdm=True, logging_strategy="no",
        dataloader_num_workers=args.num_workers, seed=args.seed, use_cpu=True)
    collator = DataCollatorWithPadding(ex.get_tokenizer(args), pad_to_multiple_of=8)
    trainer = Trainer(model=TrainerModel(model), args=targs, train_dataset=train, eval_dataset=valid,
                      data_collator=collator, compute_metrics=accuracy)
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_acc" in h]
    return summarise(clock, {h["step"]: h["eval_acc"] for h in evals}, opts.target, opts.warmup)


RUNNERS = {"sat_ungrouped": sat_runner(False), "sat_grouped": sat_runner(True), "trainer_grouped": run_trainer}


def boolq_length_data(default: dict, out: Path, seed: int = 0) -> dict:
    """The default rows with 0..~40 neutral sentences appended (log-normal count): BoolQ-like lengths."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, path in default.items():
        rows = [json.loads(line) for line in open(path, encoding="utf-8")]
        for row in rows:
            extra = min(40, int(rng.lognormvariate(2.0, 0.8)))
            row["passage"] += " " + " ".join(rng.choice(FILLER) for _ in range(extra))
        paths[split] = str(out / f"{split}.jsonl")
        with open(paths[split], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=["default", "boolq-lengths"], default="default")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50, help="0 = no evaluation")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="training steps left out of the timing")
    parser.add_argument("--target", type=float, default=0.9, help="validation accuracy for time-to-accuracy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234, help="the example's --seed (init, order); not the data's")
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS))
    opts = parser.parse_args(argv)
    import logging

    logging.getLogger("sat_accel").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        data_args = ex.parse_args(["--data-root", str(root)])
        data = ex.synthetic_data(data_args)
        if opts.data == "boolq-lengths":
            data = boolq_length_data(data, root / "boolq_lengths")
        results: dict[str, list[dict]] = {name: [] for name in opts.runners}
        for r in range(opts.rounds):
            order = opts.runners if r % 2 == 0 else opts.runners[::-1]
            for name in order:
                result = RUNNERS[name](data, opts, Path(tempfile.mkdtemp(dir=root)))
                results[name].append(result)
                print(f"[round {r}] {name}: {json.dumps(result)}", flush=True)
    base = statistics.median(x["tokens_per_s"] for x in results.get("sat_ungrouped", [{"tokens_per_s": 0}])) or None
    for name, runs in results.items():
        rate = statistics.median(x["tokens_per_s"] for x in runs)
        ratio = f" ({rate / base:.2f}x sat_ungrouped)" if base else ""
        print(f"{opts.data}: {name}: real tokens/s {rate:.0f}{ratio}; accuracy {[x['accuracy'] for x in runs]}; "
              f"time to {opts.target}: {[x['time_to_target_s'] for x in runs]} s", flush=True)


if __name__ == "__main__":
    main()
