"""DeepSpeed ZeRO-1/2/3 and ZeRO-2 + CPU offload on CPU (2 gloo processes) against DDP: same per-step losses
(1e-5) and weights (relative L2 5e-3), exact (bitwise) resume under ZeRO-2 and ZeRO-3,
evaluation gathered from both ranks, a NaN loss on one rank skipped like DDP skips it, a rank that raises
stops every rank quickly, ZeRO-3 with activation checkpointing. The DeepSpeed runs alternate between
`--zero-stage N` under torchrun and accelerate_configs/deepspeed_*.yaml, so both entry points are exercised.
Final weights are read from the consolidated checkpoint (model.safetensors), which is what ZeRO-3 gathers.

This file is also the training script the tests start: `python tests/test_deepspeed.py --out DIR ...`
(extra flags: --fault raise|nan, --fault-rank R, --fault-iter I, --model tiny|sat, --gather-check).
"""
import glob
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import tiny_task  # noqa: E402
from launch import assert_bitwise, assert_same_training, command, launch_env, run_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "accelerate_configs"
SCRIPT = Path(__file__).resolve()
COMMON = ["--train-data", "tiny:96", "--split", "1", "--train-iters", "8", "--log-interval", "1", "--lr", "3e-3",
          "--warmup", "0.25", "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6",
          "--valid-data", "valid:13", "--eval-interval", "4", "--strict-eval", "--eval-batch-size", "4"]
SAT_MODEL = ["--model", "sat", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
             "--vocab-size", "8", "--max-sequence-length", "8", "--hidden-dropout", "0", "--attention-dropout", "0"]
# Below this many elements ZeRO-3 keeps a parameter whole on every rank; 0 makes it really partition ours.
# ZeRO-1/2 against DDP is compared within SPEC tolerances, not bitwise: DeepSpeed sums the clipping norm in its own
# order (clipped runs differ by one ulp once the norm exceeds the threshold: max 5.7e-7 absolute, attention biases),
# and it steps AdamW over one flat buffer (out.bias ends 2.3e-10 apart even without clipping; likely the fused
# kernel's vectorised body vs the scalar tail that DDP's per-parameter step uses for so small a tensor).
# Measured on torch 2.13 CPU / DeepSpeed 0.19.8; repeats of one configuration stay bitwise (resume tests below).
ZERO3_JSON = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def run(out: Path, argv: list, **kwargs):
    """2 processes (torchrun unless a yaml is given), saving every 4 iterations into <out>/ckpt."""
    argv = COMMON + argv + ["--save", str(out / "ckpt"), "--save-interval", "4"]
    if "config_file" not in kwargs:
        kwargs.update(nproc=2, launcher="torchrun")
    return run_tiny(out, argv, script=SCRIPT, **kwargs)


def saved(out: Path, iteration: int = 8) -> dict:
    (path,) = glob.glob(str(out / "ckpt" / "run-*" / str(iteration) / "model.safetensors"))
    return load_file(path)


def valid_records(proc) -> list:
    return [r for r in proc.records if r["split"] == "valid"]


def assert_like_ddp(ddp, other) -> None:
    (ddp_losses, _, ddp_proc, ddp_out), (losses, _, proc, out) = ddp, other
    assert_same_training(ddp_losses, losses, saved(ddp_out), saved(out))
    ddp_valid, valid = valid_records(ddp_proc), valid_records(proc)
    assert [r["iteration"] for r in valid] == [4, 8]
    for a, b in zip(ddp_valid, valid):  # gathered from both ranks: all 13 examples, counted once
        assert b["n_examples"] == 13
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a["acc_all"] - b["acc_all"]) <= 1e-6


def _run_fixture(tmp_path_factory, name, argv, **kwargs):
    out = tmp_path_factory.mktemp(name)
    return (*run(out, argv, **kwargs), out)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    return _run_fixture(tmp_path_factory, "ddp", ["--batch-size", "4"])


@pytest.fixture(scope="module")
def zero2_accumulating(tmp_path_factory):
    return _run_fixture(tmp_path_factory, "zero2", ["--zero-stage", "2", "--batch-size", "2",
                                                    "--gradient-accumulation-steps", "2"])


@pytest.fixture(scope="module")
def zero3(tmp_path_factory):
    json_path = tmp_path_factory.mktemp("z3json") / "zero3.json"
    json_path.write_text(json.dumps(ZERO3_JSON))
    return _run_fixture(tmp_path_factory, "zero3", ["--batch-size", "4", "--deepspeed_config", str(json_path)],
                        config_file=CONFIGS / "deepspeed_zero3.yaml"), json_path


def test_zero1_from_yaml_equals_ddp(tmp_path, ddp):
    other = (*run(tmp_path, ["--batch-size", "4"], config_file=CONFIGS / "deepspeed_zero1.yaml"), tmp_path)
    assert "DeepSpeed config" in other[2].stderr + other[2].stdout
    assert_like_ddp(ddp, other)


def test_zero2_with_gradient_accumulation_equals_ddp(ddp, zero2_accumulating):
    assert_like_ddp(ddp, zero2_accumulating)


def test_zero2_cpu_offload_from_yaml_equals_ddp(tmp_path, ddp):
    other = (*run(tmp_path, ["--batch-size", "4"], config_file=CONFIGS / "deepspeed_zero2_offload.yaml"), tmp_path)
    assert_like_ddp(ddp, other)


def test_zero3_from_yaml_plus_json_equals_ddp(ddp, zero3):
    """Not bitwise: ZeRO-3 sums the clipping norm over partitions in another order, and nn.MultiheadAttention's
    parameters (used outside their module's forward) differ in the last bits (measured ~1e-7 relative on
    weights; ~1e-4 on the attention key biases, whose true gradient is zero)."""
    assert_like_ddp(ddp, zero3[0])


def test_zero3_checkpoint_holds_full_weights_and_every_rank_partition(zero3):
    _, _, _, out = zero3[0]
    assert all(t.numel() > 0 for t in saved(out).values())
    (state,) = glob.glob(str(out / "ckpt" / "run-*" / "4" / "training_state"))
    files = os.listdir(os.path.join(state, "deepspeed"))
    assert sum("optim_states" in f for f in files) == 2   # DeepSpeed's own checkpoint: one partition per rank
    assert not [f for f in os.listdir(state) if f.startswith("optimizer")]


def _resume(tmp_path, first_run, argv, **kwargs):
    """Load iteration 4 of `first_run` and train to 8: must equal the uninterrupted run bit for bit."""
    (run_dir,) = glob.glob(str(first_run[3] / "ckpt" / "run-*"))
    losses, _, _ = run(tmp_path, argv + ["--load", run_dir, "--load-iteration", "4"], **kwargs)
    assert sorted(losses) == [5, 6, 7, 8]
    assert all(losses[it] == first_run[0][it] for it in losses)
    assert_bitwise(saved(first_run[3]), saved(tmp_path))


def test_resume_under_zero2_is_exact(tmp_path, zero2_accumulating):
    _resume(tmp_path, zero2_accumulating, ["--zero-stage", "2", "--batch-size", "2",
                                           "--gradient-accumulation-steps", "2"])


def test_resume_under_zero3_is_exact(tmp_path, zero3):
    (first, json_path) = zero3
    _resume(tmp_path, first, ["--batch-size", "4", "--deepspeed_config", str(json_path)],
            config_file=CONFIGS / "deepspeed_zero3.yaml")


def test_nan_on_one_rank_is_skipped_like_ddp(tmp_path):
    """DeepSpeed steps inside backward(); its own overflow check skips a non-finite step, and our flag
    all-reduce keeps the LR schedule and the skip count in line with DDP."""
    fault = ["--batch-size", "4", "--fault", "nan", "--fault-rank", "1", "--fault-iter", "3"]
    ddp_losses, _, ddp_proc = run(tmp_path / "ddp", fault)
    losses, _, proc = run(tmp_path / "zero2", fault, config_file=CONFIGS / "deepspeed_zero2.yaml")
    assert_same_training({k: v for k, v in ddp_losses.items() if k > 3}, {k: v for k, v in losses.items() if k > 3},
                         saved(tmp_path / "ddp"), saved(tmp_path / "zero2"))
    assert all(torch.isfinite(t).all() for t in saved(tmp_path / "zero2").values())
    for records in (ddp_proc.records, proc.records):
        assert max(r.get("skipped_iters", 0) for r in records if r["split"] == "train") == 1


def test_a_rank_that_raises_stops_every_rank_quickly(tmp_path):
    argv = COMMON + ["--batch-size", "4", "--zero-stage", "2", "--fault", "raise", "--fault-rank", "1",
                     "--fault-iter", "3", "--out", str(tmp_path)]
    start = time.time()
    proc = subprocess_run(command(2, "torchrun", script=SCRIPT) + argv, timeout=120)
    assert proc.returncode != 0
    assert time.time() - start < 60
    assert not (tmp_path / "DONE").exists()
    assert "injected failure on rank 1" in proc.stderr


def test_zero3_with_activation_checkpointing_trains_and_saves(tmp_path):
    ddp_losses, _, _ = run(tmp_path / "ddp", SAT_MODEL + ["--batch-size", "4", "--checkpoint-activations"])
    losses, _, _ = run(tmp_path / "zero3", SAT_MODEL + ["--batch-size", "4", "--checkpoint-activations",
                                                        "--zero-stage", "3"])
    assert_same_training(ddp_losses, losses, saved(tmp_path / "ddp"), saved(tmp_path / "zero3"))


def test_zero3_full_model_for_the_caller(tmp_path):
    """sharded_state.unwrapped_full_model: the gathered module equals the consolidated state dict."""
    json_path = tmp_path / "zero3.json"
    json_path.write_text(json.dumps(ZERO3_JSON))
    proc = subprocess_run(command(2, "torchrun", script=SCRIPT) + [
        "--gather-check", "--zero-stage", "3", "--deepspeed_config", str(json_path), "--batch-size", "4",
        "--out", str(tmp_path)], timeout=300)
    assert (tmp_path / "DONE").exists(), proc.stderr[-4000:]


def subprocess_run(cmd, timeout):
    import subprocess

    return subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the training script
def _pop(argv: list, flag: str, default=None, is_switch: bool = False):
    if flag not in argv:
        return default
    i = argv.index(flag)
    if is_switch:
        del argv[i]
        return True
    value = argv[i + 1]
    del argv[i:i + 2]
    return value


def _faulty(forward_step, fault: str, rank: int, iteration: int):
    """forward_step that raises, or returns a NaN loss, on one rank in one iteration."""
    calls = {"n": 0}

    def step(data_iterator, model, args, timers):
        calls["n"] += 1
        loss, metrics = forward_step(data_iterator, model, args, timers)
        now = (calls["n"] - 1) // args.gradient_accumulation_steps + 1
        if args.rank == rank and now == iteration and model.training:
            if fault == "raise":
                raise RuntimeError(f"injected failure on rank {rank}")
            if fault == "nan":
                loss = loss * float("nan")
        return loss, metrics
    return step


def sat_forward_step(data_iterator, model, args, timers):
    """The tiny task as tokens for a sat_accel BaseModel: 4 symbols from each x, label from logits[:, 0, :2]."""
    batch = next(data_iterator)
    ids = (batch["x"] > 0).long() * 2 + (batch["x"].abs() > 1).long()
    logits, *_ = model(input_ids=ids)
    loss = F.cross_entropy(logits[:, 0, :2].float(), batch["y"])
    return loss, {"acc": (logits[:, 0, :2].argmax(-1) == batch["y"]).float().mean()}


def sat_forward_eval(data_iterator, model, args, timers):
    batch = next(data_iterator)
    ids = (batch["x"] > 0).long() * 2 + (batch["x"].abs() > 1).long()
    logits = model(input_ids=ids)[0][:, 0, :2].float()
    correct = (logits.argmax(-1) == batch["y"]).float()
    return F.cross_entropy(logits, batch["y"]), {"eval_correct": correct, "eval_count": torch.ones(len(correct))}


def gather_check(argv: list, out: str) -> None:
    """Train one step under ZeRO-3, then check unwrapped_full_model against the consolidated state dict."""
    from sat_accel import get_args
    from sat_accel.training.accelerator import build_accelerator
    from sat_accel.training.checkpoint import full_state_dict
    from sat_accel.training.sharded_state import unwrapped_full_model

    args = get_args(argv)
    accelerator = build_accelerator(args)
    module = tiny_task.TinyTransformer()
    model, optimizer = accelerator.prepare(module, torch.optim.AdamW(module.parameters(), lr=1e-2))
    x = torch.randn(4, 8)
    accelerator.backward(model(x).square().mean())
    expected = full_state_dict(accelerator, model)
    plain = unwrapped_full_model(accelerator, model)
    got = {k: v.detach() for k, v in plain.state_dict().items()}
    if accelerator.is_main_process:
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in got)
        assert torch.isfinite(plain(x)).all()  # runs as a plain module, no ZeRO hooks left
        Path(out, "DONE").write_text("ok")


def main() -> None:
    from sat_accel import get_args, training_main

    argv = sys.argv[1:]
    out = _pop(argv, "--out")
    if _pop(argv, "--gather-check", is_switch=True):
        gather_check(argv, out)
        tiny_task.exit_worker()
    else:
        fault, model_name = _pop(argv, "--fault", "none"), _pop(argv, "--model", "tiny")
        fault_rank, fault_iter = int(_pop(argv, "--fault-rank", 0)), int(_pop(argv, "--fault-iter", 0))
        args = get_args(argv + ["--summary-dir", out, "--experiment-name", "run", "--no-progress"])
        if model_name == "sat":
            from sat_accel.model import BaseModel

            model_cls, step, step_eval = BaseModel, sat_forward_step, sat_forward_eval
        else:
            model_cls, step, step_eval = tiny_task.TinyTransformer, tiny_task.forward_step, tiny_task.forward_step_eval
        model = training_main(args, model_cls, _faulty(step, fault, fault_rank, fault_iter), tiny_task.create_dataset,
                              forward_step_eval=step_eval, handle_metrics_function=tiny_task.handle_metrics)
        if args.compile and args.rank == 0:  # tests/test_compile_distributed.py reads it
            from torch._dynamo.utils import counters

            Path(out, "graph_breaks.json").write_text(json.dumps(dict(counters["graph_break"])))
        tiny_task.finish_worker(args, model, out)


if __name__ == "__main__":
    main()
