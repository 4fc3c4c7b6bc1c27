"""--compile: torch.compile of the wrapped model in place. Losses equal eager (SPEC §6 tolerances), no graph
break through the mixin hooks or activation checkpointing, clean checkpoint keys, DDP with 2 processes."""
import os

import pytest
import torch

import tiny_task
from launch import assert_same_training, run_tiny
from sat_accel import get_args, training_main
from sat_accel.errors import ConfigError
from sat_accel.training.compile import graph_break_count

COMMON = ["--train-data", "tokens:96", "--split", "1", "--log-interval", "1", "--lr", "3e-3", "--warmup", "0",
          "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6", "--no-progress", "--group-by-length",
          "--train-iters", "6"] + tiny_task.BERT_FLAGS

pytestmark = pytest.mark.slow


def train(tmp_path, argv):
    args = get_args(COMMON + ["--summary-dir", str(tmp_path)] + argv)
    model = training_main(args, tiny_task.TinyBert, tiny_task.forward_step_tokens, tiny_task.create_token_dataset)
    records = tiny_task.read_metrics(next(tmp_path.glob("*/metrics.jsonl")))
    return {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}, model


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return train(tmp_path_factory.mktemp("eager"), ["--batch-size", "8"])


def test_compiled_bert_with_mixins_and_checkpointing_matches_eager_without_graph_breaks(tmp_path, eager):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    losses, model = train(tmp_path, ["--batch-size", "8", "--compile", "--checkpoint-activations"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert graph_break_count() == 0, dict(torch._dynamo.utils.counters["graph_break"])
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    assert_same_training(eager[0], losses, {k: v.detach() for k, v in eager[1].state_dict().items()}, weights)
    assert not any("_orig_mod" in k for k in weights)  # checkpoints and from_pretrained see eager names


@pytest.mark.multiprocess
def test_two_processes_ddp_compiled_equal_one_process_eager(tmp_path, eager):
    script = tiny_task.__file__.replace("tiny_task.py", "scripts/train_tokens.py")
    argv = [a for a in COMMON if a != "--no-progress"] + ["--batch-size", "4", "--compile", "--model", "TinyBert"]
    losses, weights, _ = run_tiny(tmp_path, argv, nproc=2, launcher="torchrun", script=script, timeout=600)
    assert_same_training(eager[0], losses, {f"bert.{k}" if not k.startswith("bert.") else k: v.detach()
                                            for k, v in eager[1].state_dict().items()}, weights)


def test_flags_that_cannot_compile_are_refused(tmp_path, monkeypatch):
    args = get_args(COMMON + ["--batch-size", "8", "--compile", "--summary-dir", str(tmp_path)])
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")
    with pytest.raises(ConfigError, match="dynamo_backend"):
        training_main(args, tiny_task.TinyBert, tiny_task.forward_step_tokens, tiny_task.create_token_dataset)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    args.zero_stage = 3
    with pytest.raises(ConfigError, match="zero-stage 3"):
        training_main(args, tiny_task.TinyBert, tiny_task.forward_step_tokens, tiny_task.create_token_dataset)


def test_the_hooked_model_compiles_once_without_breaks():
    """The mixin hooks are installed before the first call, so dynamo sees no dict mutation: one graph for
    repeated calls (a recompile per step would cost a full compilation)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = tiny_task.TinyBert(get_args(tiny_task.BERT_FLAGS))
    model.compile(backend="eager")
    ids = torch.randint(1, 16, (2, 8))
    for _ in range(3):
        model(ids, torch.ones_like(ids)).sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert graph_break_count() == 0
