"""The GPU checks of the scale-out work, as one prepared run (scripts/gpu_check.sh starts it).

    python scripts/gpu_check.py all --out DIR [--smoke]       # every case, a summary table at the end
    python scripts/gpu_check.py case NAME --out DIR [--smoke] # one case (what `all` runs in a subprocess)

Cases: fp16 (1 GPU, loss scaling active, overflow steps injected and counted), bf16, zero2 (DeepSpeed
ZeRO-2 on 1 GPU), fsdp (FSDP2 on 1 GPU, save + exact resume), and BERT-base throughput (random init,
seq 512, batch 32, bf16) in samples/s and model-FLOPs utilisation for sat_accel's training_main, a
hand-written Accelerate loop and HF Trainer, all on the same model and data (bert_sat_synced_timers, run
only when named: bert_sat with the timers synchronising every iteration, as SAT's do). A case whose package is
missing (deepspeed, ...) is skipped with the reason. `--smoke` runs everything tiny on CPU to check the
plumbing. Prints as it goes; each case writes DIR/NAME/result.json, `all` writes DIR/summary.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
TRAIN_SCRIPT = ROOT / "tests" / "test_deepspeed.py"   # a general tiny training script (tiny task / sat model)
CASE_TIMEOUT_S = {"fp16": 60, "bf16": 50, "zero2": 70, "fsdp": 100, "bert_sat": 70, "bert_accelerate": 50,
                  "bert_trainer": 70, "bert_sat_synced_timers": 70, "bert_sat_compiled": 130,
                  "bert_trainer_compiled": 130}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
TINY = ["--train-data", "tiny:256", "--split", "1", "--log-interval", "1", "--lr", "3e-3", "--warmup", "0.1",
        "--num-workers", "0", "--seed", "7", "--batch-size", "8", "--no-progress"]


# ---------------------------------------------------------------- tiny trainings (fp16 / bf16)
class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)


def _overflowing_forward(iterations: set[int]):
    """tiny_task.forward_step whose loss is scaled by 1e6 in `iterations`: fp16 gradients overflow there."""
    import tiny_task

    calls = {"n": 0}

    def step(data_iterator, model, args, timers):
        calls["n"] += 1
        loss, metrics = tiny_task.forward_step(data_iterator, model, args, timers)
        return (loss * 1e6 if calls["n"] in iterations else loss), metrics
    return step


def case_tiny(out: Path, precision: str, smoke: bool) -> dict:
    """training_main on 1 device; fp16: counts the steps GradScaler skipped (loss-scale drops)."""
    import tiny_task
    from sat_accel import get_args, training_main

    iters = 12 if smoke else 40
    args = get_args(TINY + ["--train-iters", str(iters), f"--{precision}", "--summary-dir", str(out),
                            "--experiment-name", precision])
    injected = {5, 6}
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        training_main(args, tiny_task.TinyModel, _overflowing_forward(injected if precision == "fp16" else set()),
                      tiny_task.create_dataset)
    losses = [r["loss"] for r in _records(out) if r["split"] == "train"]
    scales = [float(s) for s in re.findall(r"loss scale ([0-9.eE+]+)", captured.getvalue())]
    drops = sum(b < a for a, b in zip(scales, scales[1:]))
    ok = losses[-1] < losses[0] and all(map(_finite, losses[-5:]))
    details = {"device": args.device, "first_loss": losses[0], "last_loss": losses[-1], "iterations": len(losses)}
    if precision == "fp16":
        details.update(loss_scale_first=scales[:1], loss_scale_last=scales[-1:], overflow_steps_skipped=drops,
                       overflow_steps_injected=len(injected))
        ok = ok and (smoke or (bool(scales) and drops >= len(injected)))
    return {"status": "ok" if ok else "failed", "details": details}


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _records(out: Path) -> list[dict]:
    (path,) = glob.glob(str(out / "*" / "metrics.jsonl"))
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# ---------------------------------------------------------------- launched trainings (ZeRO-2, FSDP)
def _launch(out: Path, yaml: str, argv: list[str], timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_configs" / yaml),
           "--num_processes", "1", str(TRAIN_SCRIPT), *argv, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    (out / "launch.log").write_text(proc.stdout + proc.stderr)
    return proc


def _sat_run_argv(smoke: bool, iters: int = 8) -> list[str]:
    width = ["--hidden-size", "32", "--num-attention-heads", "4"] if smoke else ["--hidden-size", "256",
                                                                                 "--num-attention-heads", "4"]
    return (TINY + ["--train-iters", str(iters), "--model", "sat", "--num-layers", "2", "--vocab-size", "8",
                    "--max-sequence-length", "8", "--hidden-dropout", "0", "--attention-dropout", "0"] + width
            + ([] if smoke else ["--bf16"]))


def case_zero2(out: Path, smoke: bool) -> dict:
    if importlib.util.find_spec("deepspeed") is None:
        return {"status": "skipped", "reason": "deepspeed is not installed on this machine"}
    proc = _launch(out, "deepspeed_zero2.yaml", _sat_run_argv(smoke) + ["--save", str(out / "ckpt")], 65)
    if not (out / "DONE").exists():
        return {"status": "failed", "reason": _tail(proc)}
    losses = [r["loss"] for r in _records(out) if r["split"] == "train"]
    return {"status": "ok" if losses[-1] < losses[0] else "failed",
            "details": {"first_loss": losses[0], "last_loss": losses[-1],
                        "deepspeed_state": bool(glob.glob(str(out / "ckpt/*/8/training_state/deepspeed")))}}


def case_fsdp(out: Path, smoke: bool) -> dict:
    """FSDP2 through accelerate_configs/fsdp.yaml: train 8, save at 4 and 8, resume from 4, compare."""
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "FSDP through Accelerate needs a GPU (sat_accel refuses it on CPU)"}
    first, second = out / "first", out / "resumed"
    argv = _sat_run_argv(smoke) + ["--save-interval", "4"]
    proc = _launch(first, "fsdp.yaml", argv + ["--save", str(first / "ckpt")], 45)
    if not (first / "DONE").exists():
        return {"status": "failed", "reason": _tail(proc)}
    details = _fsdp_checkpoint_facts(first)
    (run_dir,) = glob.glob(str(first / "ckpt" / "run-*"))
    proc = _launch(second, "fsdp.yaml", argv + ["--save", str(second / "ckpt"), "--load", run_dir,
                                                "--load-iteration", "4"], 45)
    if not (second / "DONE").exists():
        details["resume"] = "failed: " + _tail(proc, 600)
        return {"status": "failed", "details": details}
    a = {r["iteration"]: r["loss"] for r in _records(first) if r["split"] == "train"}
    b = {r["iteration"]: r["loss"] for r in _records(second) if r["split"] == "train"}
    details["resume_max_loss_diff"] = max(abs(a[i] - b[i]) for i in b)
    ok = (details["full_weights"] and details["sharded_optimizer"] and details["returned_model_equals_checkpoint"]
          and details["resume_max_loss_diff"] < 1e-3)
    return {"status": "ok" if ok else "failed", "details": details}


def _fsdp_checkpoint_facts(first: Path) -> dict:
    from safetensors.torch import load_file

    (weights,) = glob.glob(str(first / "ckpt" / "run-*" / "8" / "model.safetensors"))
    losses = [r["loss"] for r in _records(first) if r["split"] == "train"]
    saved, returned = load_file(weights), load_file(str(first / "final.safetensors"))  # final: training_main's
    return {"first_loss": losses[0], "last_loss": losses[-1],
            "full_weights": all(t.numel() > 0 for t in saved.values()),
            "returned_model_equals_checkpoint": saved.keys() == returned.keys() and all(
                (saved[k] == returned[k]).all().item() for k in saved),
            "sharded_optimizer": bool(glob.glob(str(first / "ckpt/*/8/training_state/fsdp_optimizer")))}


def _tail(proc: subprocess.CompletedProcess, n: int = 1500) -> str:
    return (proc.stdout + proc.stderr)[-n:]


# ---------------------------------------------------------------- BERT-base throughput
def bert_shape(smoke: bool) -> dict:
    if smoke:
        return dict(layers=2, hidden=64, heads=4, vocab=500, seq=32, batch=4, steps=12, warmup=4)
    return dict(layers=12, hidden=768, heads=12, vocab=30522, seq=512, batch=32, steps=100, warmup=20)


def bert_flops_per_sample(s: dict) -> float:
    """Matmul FLOPs of one training sample (forward + backward = 3 x forward): per token and layer
    24 H^2 (QKV, output, 4H MLP) + 4 T H (scores, context); MLM head 2 H^2 + 2 H V per token."""
    h, t = s["hidden"], s["seq"]
    forward_per_token = s["layers"] * (24 * h * h + 4 * t * h) + 2 * h * h + 2 * h * s["vocab"]
    return 3.0 * forward_per_token * t


def bert_args(s: dict, extra: list[str]):
    from sat_accel import get_args

    return get_args(["--num-layers", str(s["layers"]), "--hidden-size", str(s["hidden"]), "--num-attention-heads",
                     str(s["heads"]), "--vocab-size", str(s["vocab"]), "--max-sequence-length", str(s["seq"]),
                     "--layernorm-order", "post", "--batch-size", str(s["batch"]), "--lr", "1e-4", *extra])


class RandomTokens:
    """Map-style dataset of random token ids; the MLM-style target is the input itself."""

    def __init__(self, s: dict, n: int | None = None):
        import torch

        self.ids = torch.randint(0, s["vocab"], (n or s["batch"] * (s["steps"] + 2), s["seq"]),
                                 generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def bert_loss(model, input_ids, labels):
    import torch
    import torch.nn.functional as F

    logits, *_ = model(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _throughput(s: dict, samples_per_s: float, device: str) -> dict:
    import torch

    flops = bert_flops_per_sample(s)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return {"samples_per_s": round(samples_per_s, 2), "model_tflops_per_s": round(samples_per_s * flops / 1e12, 2),
            "mfu": round(samples_per_s * flops / peak, 4) if peak else None, "device": name,
            "gflop_per_sample": round(flops / 1e9, 1), "shape": s}


def case_bert_sat(out: Path, smoke: bool, extra: tuple = ()) -> dict:
    """training_main: samples/s over the log intervals after the first (the same iterations the
    Accelerate loop times: warmup+1 .. steps), from the per-interval rates in metrics.jsonl. With
    `extra` flags (e.g. --compile) appended; the first interval's extra time is reported as first_interval_s."""
    from sat_accel import training_main
    from sat_accel.model import BertModel

    s = bert_shape(smoke)
    interval = s["warmup"]
    args = bert_args(s, ["--train-data", "synthetic", "--split", "1", "--train-iters", str(s["steps"]),
                         "--log-interval", str(interval), "--num-workers", "0", "--no-progress",
                         "--summary-dir", str(out), "--experiment-name", "bert"] + ([] if smoke else ["--bf16"])
                      + list(extra))

    def forward_step(data_iterator, model, args, timers):
        batch = next(data_iterator)
        return bert_loss(model, batch["input_ids"], batch["labels"])

    training_main(args, BertModel, forward_step, lambda path, a: RandomTokens(s))
    all_rates = [r["samples_per_s"] for r in _records(out) if r["split"] == "train"]
    rates, samples = all_rates[1:], interval * s["batch"]
    details = _throughput(s, len(rates) * samples / sum(samples / r for r in rates), args.device)
    details["first_interval_s"] = round(samples / all_rates[0], 2)  # includes compilation with --compile
    return {"status": "ok", "details": details}


def case_bert_sat_synced_timers(out: Path, smoke: bool) -> dict:
    """bert_sat with SAT's timer behaviour (device synchronised around every phase of every iteration), to
    measure what sampling the timers in the logged iteration only is worth. Not part of `all`."""
    from sat_accel.training.timers import Timers

    Timers.measuring = property(lambda self: True, lambda self, value: None)
    return case_bert_sat(out, smoke)


def case_bert_accelerate(out: Path, smoke: bool) -> dict:
    """The same model, data and optimizer in a hand-written Accelerate loop (the baseline to beat)."""
    import torch
    from accelerate import Accelerator
    from sat_accel.model import BertModel

    s = bert_shape(smoke)
    accelerator = Accelerator(mixed_precision="no" if smoke else "bf16", cpu=smoke)
    model = BertModel(bert_args(s, []))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    loader = torch.utils.data.DataLoader(RandomTokens(s), batch_size=s["batch"], shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    start = None
    for step, batch in enumerate(loader, start=1):
        loss = bert_loss(model, batch["input_ids"], batch["labels"])
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in (s["warmup"], s["steps"]):
            loss.item()  # waits for the device
            if step == s["warmup"]:
                start = time.perf_counter()
            else:
                break
    rate = (s["steps"] - s["warmup"]) * s["batch"] / (time.perf_counter() - start)
    return {"status": "ok", "details": _throughput(s, rate, str(accelerator.device))}


def case_bert_trainer(out: Path, smoke: bool, compiled: bool = False) -> dict:
    """The same model and data through transformers.Trainer (timed by a callback after the warm-up);
    `compiled`: TrainingArguments(torch_compile=True)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from sat_accel.model import BertModel

    s = bert_shape(smoke)

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(bert_args(s, []))

        def forward(self, input_ids, labels):
            return {"loss": bert_loss(self.bert, input_ids, labels)}

    marks = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks[0] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (s["warmup"], s["steps"]):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=s["batch"], max_steps=s["steps"],
        learning_rate=1e-4, weight_decay=0.01, max_grad_norm=1.0, bf16=not smoke, use_cpu=smoke,
        logging_strategy="no", save_strategy="no", report_to=[], dataloader_num_workers=0, disable_tqdm=True,
        torch_compile=compiled)
    Trainer(model=WithLoss(), args=training_args, train_dataset=RandomTokens(s), callbacks=[Clock()]).train()
    rate = (s["steps"] - s["warmup"]) * s["batch"] / (marks[s["steps"]] - marks[s["warmup"]])
    details = _throughput(s, rate, "cuda" if torch.cuda.is_available() else "cpu")
    details["first_interval_s"] = round(marks[s["warmup"]] - marks[0], 2)  # steps 1..warmup, compilation included
    return {"status": "ok", "details": details}


CASES = {"fp16": lambda out, smoke: case_tiny(out, "fp16", smoke),
         "bf16": lambda out, smoke: case_tiny(out, "bf16", smoke),
         "zero2": case_zero2, "fsdp": case_fsdp, "bert_sat": case_bert_sat,
         "bert_accelerate": case_bert_accelerate, "bert_trainer": case_bert_trainer,
         "bert_sat_synced_timers": case_bert_sat_synced_timers,
         "bert_sat_compiled": lambda out, smoke: case_bert_sat(out, smoke, ("--compile",)),
         "bert_trainer_compiled": lambda out, smoke: case_bert_trainer(out, smoke, compiled=True)}
# Run only when named: `bash scripts/gpu_check.sh bert_sat bert_trainer bert_sat_compiled bert_trainer_compiled`
EXTRA_CASES = {"bert_sat_synced_timers", "bert_sat_compiled", "bert_trainer_compiled"}


def run_case(name: str, out: Path, smoke: bool) -> None:
    """Run one case in this process and write out/result.json (a crash is a 'failed' result)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        result = CASES[name](out, smoke)
    except Exception as e:  # noqa: BLE001 - the summary must say what broke, the run goes on
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:1500]}
    result.update(case=name, seconds=round(time.time() - start, 1))
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"[gpu_check] {name}: {result['status']}", flush=True)


def run_all(out: Path, smoke: bool, only: list[str], budget_s: float) -> list[dict]:
    """Every case in its own process (fresh Accelerate state, own time limit, all within `budget_s`)."""
    results = []
    deadline = time.time() + budget_s
    for name in only or [c for c in CASES if c not in EXTRA_CASES]:
        case_out = out / name
        cmd = [sys.executable, __file__, "case", name, "--out", str(case_out)] + (["--smoke"] if smoke else [])
        limit = min(CASE_TIMEOUT_S[name] * (3 if smoke else 1), deadline - time.time())
        print(f"[gpu_check] --- {name} (limit {limit:.0f} s)", flush=True)
        try:
            if limit < 5:
                raise subprocess.TimeoutExpired(cmd, 0)
            subprocess.run(cmd, timeout=limit, check=False)
            result = json.loads((case_out / "result.json").read_text())
        except subprocess.TimeoutExpired:
            result = {"case": name, "status": "failed", "reason": f"timed out (limit {limit:.0f} s)"}
        except (OSError, ValueError) as e:
            result = {"case": name, "status": "failed", "reason": f"no result ({e})"}
        results.append(result)
    return results


def summary_markdown(results: list[dict], environment: dict, smoke: bool) -> str:
    lines = ["# sat_accel GPU check", "", "```", json.dumps(environment, indent=1), "```", "",
             "| case | status | seconds | details |", "| --- | --- | --- | --- |"]
    for r in results:
        info = r.get("reason") or json.dumps({k: v for k, v in r.get("details", {}).items() if k != "shape"})
        lines.append(f"| {r['case']} | {r['status']} | {r.get('seconds', '')} | {info} |")
    by_case = {r["case"]: r.get("details", {}) for r in results}
    sat, acc, trainer = (by_case.get(k, {}).get("samples_per_s")
                         for k in ("bert_sat", "bert_accelerate", "bert_trainer"))
    if sat and acc:
        label = "BERT (smoke sizes, CPU fp32)" if smoke else "BERT-base bf16"
        line = f"{label} samples/s: sat_accel {sat}, Accelerate loop {acc} (sat/loop {sat / acc:.3f})"
        lines += ["", line + (f", HF Trainer {trainer} (sat/Trainer {sat / trainer:.3f})" if trainer else "")]
        synced = by_case.get("bert_sat_synced_timers", {}).get("samples_per_s")
        if synced:
            lines.append(f"sat_accel with every-iteration timer syncs (SAT's way) {synced} (synced/sampled "
                         f"{synced / sat:.3f})")
    lines += _compiled_lines(by_case, sat, trainer)
    return "\n".join(lines) + "\n"


def _compiled_lines(by_case: dict, sat: float | None, trainer: float | None) -> list[str]:
    """--compile vs eager and vs Trainer(torch_compile=True), when those cases ran."""
    compiled = by_case.get("bert_sat_compiled", {}).get("samples_per_s")
    trainer_compiled = by_case.get("bert_trainer_compiled", {}).get("samples_per_s")
    if not compiled:
        return []
    line = f"compiled: sat_accel --compile {compiled} (MFU {by_case['bert_sat_compiled'].get('mfu')})"
    if sat:
        line += f", compiled/eager {compiled / sat:.3f}"
    if trainer_compiled:
        line += f"; Trainer torch_compile {trainer_compiled} (sat/Trainer compiled {compiled / trainer_compiled:.3f})"
    return [line]


def environment() -> dict:
    import torch

    found = {p: importlib.util.find_spec(p) is not None for p in ("deepspeed", "datasets", "evaluate", "transformers")}
    return {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "packages": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["all", "case"])
    parser.add_argument("names", nargs="*", help="case names (mode case: exactly one; mode all: a subset)")
    parser.add_argument("--out", required=True, help="folder for results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (checks the plumbing only)")
    parser.add_argument("--budget", type=float, default=270, help="seconds for all cases together (mode all)")
    opts = parser.parse_intermixed_args()  # `all --out D --smoke fsdp bf16` works too
    out = Path(opts.out)
    if opts.mode == "case":
        run_case(opts.names[0], out, opts.smoke)
        return
    env = environment()
    print(f"[gpu_check] environment: {json.dumps(env)}", flush=True)
    results = run_all(out, opts.smoke, opts.names, opts.budget)
    text = summary_markdown(results, env, opts.smoke)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"environment": env, "results": results}, indent=2, default=str))
    print(text, flush=True)


if __name__ == "__main__":
    main()
