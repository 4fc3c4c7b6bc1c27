"""training_main end to end in one process: learning, model kinds, hooks contract, bad input."""
import glob
import os
import re

import pytest
import torch
import torch.nn.functional as F

import tiny_task
from sat_accel import get_args, training_main
from sat_accel.errors import HookError


def _args(tmp_path, *extra):
    return get_args(["--train-data", "tiny:256", "--split", "1", "--batch-size", "16", "--lr", "5e-3",
                     "--train-iters", "40", "--log-interval", "10", "--num-workers", "0", "--warmup", "0",
                     "--summary-dir", str(tmp_path), "--experiment-name", "t", "--no-progress", *extra])


def _metrics(tmp_path):
    (path,) = glob.glob(os.path.join(tmp_path, "t-*", "metrics.jsonl"))
    return tiny_task.read_metrics(path)


def test_tiny_model_learns(tmp_path):
    args = _args(tmp_path, "--train-iters", "60")
    model = training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)
    train = [r for r in _metrics(tmp_path) if r["split"] == "train"]
    assert [r["iteration"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert train[-1]["acc"] > 0.85
    assert {"lr", "samples_per_s"} <= set(train[0])
    assert isinstance(model, tiny_task.TinyModel)
    assert glob.glob(os.path.join(tmp_path, "runs", "t-*", "events.out.tfevents.*"))  # TensorBoard, SAT's folder


def test_save_args_writes_every_argument_next_to_the_summaries(tmp_path):
    args = _args(tmp_path, "--train-iters", "2", "--save-args")
    training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)
    (path,) = glob.glob(os.path.join(tmp_path, "runs", "t-*.txt"))  # SAT's <summary-dir>/runs/<experiment>.txt
    lines = open(path, encoding="utf-8").read().splitlines()
    assert f"  lr {'.' * 27} 0.005" in lines and f"  save_args {'.' * 20} True" in lines
    assert len(lines) == len(vars(args))


def test_training_main_twice_with_the_same_args_keeps_the_users_experiment_name(tmp_path):
    args = _args(tmp_path, "--train-iters", "2")
    for _ in range(2):  # a notebook re-running its training cell
        training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)
        assert args.experiment_base_name == "t"
        # t-%m-%d-%H-%M, one timestamp (plus -2 when the second run starts in the same minute: its own folder)
        assert re.fullmatch(r"t(-\d\d){4}(-2)?", args.experiment_name), args.experiment_name


def test_accepts_instance_pair_and_hf_model(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    hf_model = BertForSequenceClassification(config)

    def hf_forward(data_iterator, model, args, timers):
        batch = next(data_iterator)
        ids = (batch["x"].abs() * 10).long().clamp(0, 49)
        return model(input_ids=ids, labels=batch["y"]).loss

    args = _args(tmp_path, "--train-iters", "3")
    out = training_main(args, (hf_model, args), hf_forward, tiny_task.create_dataset)
    assert out is hf_model
    seq = torch.nn.Sequential(torch.nn.Linear(8, 2))
    plain = lambda it, m, a, t: F.cross_entropy(m(next(it)["x"]), torch.zeros(16, dtype=torch.long))  # noqa: E731
    assert training_main(_args(tmp_path, "--train-iters", "2"), seq, plain, tiny_task.create_dataset) is seq


def test_eval_interval_and_strict_eval_weighted(tmp_path):
    args = _args(tmp_path, "--valid-data", "valid:37", "--eval-interval", "20", "--strict-eval",
                 "--eval-batch-size", "8")
    seen = {}

    def handle(metrics):
        seen.update({k: v.clone() for k, v in metrics.items()})
        return {"acc_all": metrics["eval_correct"].mean()}

    training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset,
                  handle_metrics_function=handle, forward_step_eval=tiny_task.forward_step_eval)
    valid = [r for r in _metrics(tmp_path) if r["split"] == "valid"]
    assert [r["iteration"] for r in valid] == [20, 40]
    assert seen["eval_count"].numel() == 37          # every example once, the ragged tail not padded
    assert 0 <= valid[-1]["acc_all"] <= 1 and "ppl" in valid[-1]


def test_timers_and_log_line(tmp_path, capsys):
    training_main(_args(tmp_path, "--train-iters", "10"), tiny_task.TinyModel, tiny_task.forward_step,
                  tiny_task.create_dataset)
    out = capsys.readouterr().out
    assert "iteration       10/      10 | elapsed time per iteration (ms):" in out
    assert "total loss" in out and "acc" in out and "batch generator:" in out


def test_timers_measure_only_the_logged_iterations(tmp_path):
    """Phase timers synchronise a GPU, so they run in one iteration per log interval (the logged one),
    and not during evaluation (non-strict here: an endless valid loader, which has no len())."""
    measured = []

    def forward_step(data_iterator, model, args, timers):
        measured.append(timers.measuring)
        return tiny_task.forward_step(data_iterator, model, args, timers)

    args = _args(tmp_path, "--train-iters", "8", "--log-interval", "4", "--valid-data", "valid:8",
                 "--eval-interval", "4", "--eval-iters", "1")
    training_main(args, tiny_task.TinyModel, forward_step, tiny_task.create_dataset)
    # iterations 1-4, evaluation at 4, iterations 5-8, evaluation at 8
    assert measured == [False, False, False, True, False, False, False, False, True, False]


def test_train_iters_zero_evaluates_only(tmp_path):
    model = tiny_task.TinyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training_main(_args(tmp_path, "--train-iters", "0", "--test-data", "valid:20", "--strict-eval"), model,
                  tiny_task.forward_step, tiny_task.create_dataset)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["split"] for r in _metrics(tmp_path)] == ["test"]


@pytest.mark.parametrize("returned, fragment", [
    (None, "must return a scalar loss"),
    (torch.ones(3), "shape (3,)"),
    ((torch.tensor(1.0, requires_grad=True), {"m": 1.0}), "metric 'm' as float"),
])
def test_bad_forward_step_results(tmp_path, returned, fragment):
    def bad_forward(data_iterator, model, args, timers):
        next(data_iterator)
        return returned

    with pytest.raises(HookError, match="bad_forward") as err:
        training_main(_args(tmp_path, "--train-iters", "1"), tiny_task.TinyModel, bad_forward,
                      tiny_task.create_dataset)
    assert fragment in str(err.value)
    assert list(tmp_path.iterdir()) == []   # nothing written


def test_nan_loss_skips_step_everywhere_and_stops_after_limit(tmp_path):
    calls = {"n": 0}

    def nan_sometimes(data_iterator, model, args, timers):
        calls["n"] += 1
        loss, metrics = tiny_task.forward_step(data_iterator, model, args, timers)
        return (loss * float("nan") if calls["n"] in (3, 4) else loss), metrics

    model = training_main(_args(tmp_path, "--train-iters", "10", "--gradient-accumulation-steps", "2"),
                          tiny_task.TinyModel, nan_sometimes, tiny_task.create_dataset)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    (last,) = [r for r in _metrics(tmp_path) if r["split"] == "train" and r["iteration"] == 10]
    assert last["skipped_iters"] == 1   # micro-batches 3 and 4 form iteration 2

    always_nan = lambda it, m, a, t: tiny_task.forward_step(it, m, a, t)[0] * float("nan")  # noqa: E731
    with pytest.raises(Exception, match="3 consecutive iterations had a NaN/Inf loss"):
        training_main(_args(tmp_path, "--max-skipped-iters", "3"), tiny_task.TinyModel, always_nan,
                      tiny_task.create_dataset)


def test_dataset_smaller_than_global_batch_wraps(tmp_path):
    training_main(_args(tmp_path, "--train-data", "tiny:5", "--train-iters", "10"), tiny_task.TinyModel,
                  tiny_task.forward_step, tiny_task.create_dataset)
    assert _metrics(tmp_path)[-1]["iteration"] == 10


def test_token_count_excludes_padding():
    from sat_accel.training.steps import count_tokens

    ids = torch.ones(2, 5, dtype=torch.long)
    assert count_tokens({"input_ids": ids}) == 10
    assert count_tokens({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])}) == 5
    assert count_tokens({"x": ids}) == 0


def test_low_precision_metrics_are_handed_on_in_fp32():
    from sat_accel.training.steps import call_forward_step

    def step(data_iterator, model, args, timers):
        return torch.ones((), dtype=torch.bfloat16), {"acc": torch.tensor(0.5, dtype=torch.bfloat16),
                                                      "n": torch.tensor(3)}

    loss, metrics = call_forward_step(step, None, None, None, None, True)
    assert metrics["acc"].dtype == torch.float32 and metrics["n"].dtype == torch.int64


def test_bf16_forward_step_runs_under_autocast_without_fp32_output_copies(tmp_path):
    """Under mixed precision the whole forward_step runs in autocast and the model's outputs stay in bf16
    (Accelerate's fp32 conversion of outputs is removed); metrics reach the log in fp32. A notebook can
    switch precision between calls (Accelerate's settings singletons are started afresh)."""
    training_main(_args(tmp_path / "fp32", "--train-iters", "2"), tiny_task.TinyModel, tiny_task.forward_step,
                  tiny_task.create_dataset)
    seen = []

    def forward_step(data_iterator, model, args, timers):
        batch = next(data_iterator)
        logits = model(batch["x"])
        seen.append((logits.dtype, torch.is_autocast_enabled("cpu")))
        loss = F.cross_entropy(logits, batch["y"])
        return loss, {"acc": (logits.argmax(-1) == batch["y"]).to(logits.dtype).mean()}

    args = _args(tmp_path, "--bf16", "--train-iters", "30")
    training_main(args, tiny_task.TinyModel, forward_step, tiny_task.create_dataset)
    assert set(seen) == {(torch.bfloat16, True)}
    train = [r for r in _metrics(tmp_path) if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] and 0 <= train[-1]["acc"] <= 1
