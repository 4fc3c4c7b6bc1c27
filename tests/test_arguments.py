"""get_args: SAT defaults, validation messages, launcher environment, notebook safety."""
import subprocess
import sys

import pytest

from sat_accel import get_args
from sat_accel.arguments import parse_split
from sat_accel.errors import ConfigError


def test_defaults_follow_sat():
    args = get_args([])
    assert (args.batch_size, args.lr, args.seed, args.mode) == (4, 1e-4, 1234, "pretrain")
    assert args.train_iters == 10000 and args.epochs is None
    assert args.eval_batch_size == args.batch_size
    assert (args.rank, args.world_size, args.device) == (0, 1, "cpu")


def test_dashes_on_cli_underscores_on_args():
    args = get_args(["--gradient-accumulation-steps", "3", "--lr-decay-style", "cosine"])
    assert args.gradient_accumulation_steps == 3 and args.lr_decay_style == "cosine"


@pytest.mark.parametrize("argv, fragment", [
    (["--train-iters", "5", "--epochs", "1"], "mutually exclusive"),
    (["--fp16", "--bf16"], "--fp16 and --bf16"),
    (["--train-iters", "-5"], "--train-iters must be >= 0"),
    (["--lr", "-1"], "--lr must be >= 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps must be at least 1"),
    (["--zero-stage", "5"], "--zero-stage must be 0, 1, 2 or 3"),
    (["--split", "a,b"], "--split 'a,b'"),
    (["--split", "0,0,0"], "leaves no non-zero share"),
    (["--split", "1,-1"], "non-negative"),
    (["--train-data", "a", "b", "--train-data-weights", "1"], "one weight per path"),
])
def test_bad_flags_raise_one_sentence(argv, fragment):
    with pytest.raises(ConfigError) as err:
        get_args(argv)
    assert fragment in str(err.value)


def test_train_iters_zero_is_valid():
    assert get_args(["--train-iters", "0"]).train_iters == 0


def test_cli_errors_exit_2_with_suggestion():
    code = "import sat_accel; sat_accel.get_args()"
    proc = subprocess.run([sys.executable, "-c", code, "--fp16", "--bf16"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--fp16 and --bf16" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, "--batch-sze", "2"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--batch-size" in proc.stderr  # argparse's "did you mean" or usage


def test_zero_stage_without_deepspeed_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'sat-accel\[deepspeed\]'"):
        get_args(["--zero-stage", "2"])


def test_wandb_without_the_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'sat-accel\[wandb\]'"):
        get_args(["--wandb"])


def test_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    args = get_args([])
    assert (args.rank, args.world_size, args.local_rank) == (3, 4, 1)


def test_notebook_argv_is_ignored(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1234.json"])
    args = get_args()
    assert args.batch_size == 4


def test_no_process_group_for_world_size_one():
    import torch.distributed as dist

    get_args([])
    assert not dist.is_initialized()


def test_custom_parser_flags_survive():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--my-flag", type=int, default=7)
    args = get_args(["--my-flag", "9"], parser=parser)
    assert args.my_flag == 9 and args.batch_size == 4


def test_seeding_is_deterministic():
    import torch

    get_args(["--seed", "42"])
    a = torch.rand(3)
    get_args(["--seed", "42"])
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize("split, shares", [
    ("1000,1,1", [1000 / 1002, 1 / 1002, 1 / 1002]),
    ("95,5,5", [95 / 105, 5 / 105, 5 / 105]),   # SAT's example: .905 / .048 / .048
    ("0.8,0.2", [0.8, 0.2, 0.0]),
    ("0.8", [0.8, 0.2, 0.0]),                   # below 1: the remainder is appended
    ("8/1/1", [0.8, 0.1, 0.1]),
    ("1", [1.0, 0.0, 0.0]),
])
def test_parse_split(split, shares):
    assert parse_split(split) == pytest.approx(shares)


def test_world_size_mismatch_is_an_error(monkeypatch):
    from types import SimpleNamespace

    from sat_accel.training.accelerator import check_world_size

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--multi_gpu --num_processes N"):
        check_world_size(SimpleNamespace(num_processes=1))
    check_world_size(SimpleNamespace(num_processes=2))


def test_launch_facts_have_one_writer():
    """rank / world_size / local_rank / device are assigned on args in one function only (issue 14: args is not a
    blackboard); get_args and build_accelerator both call it."""
    import ast
    from pathlib import Path

    facts = {"rank", "world_size", "local_rank", "device"}
    writers = set()
    root = Path(__file__).resolve().parent.parent / "sat_accel"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                for target in targets:
                    for leaf in (target.elts if isinstance(target, ast.Tuple) else [target]):
                        if isinstance(leaf, ast.Attribute) and leaf.attr in facts and \
                                isinstance(leaf.value, ast.Name) and leaf.value.id == "args":
                            writers.add((path.name, func.name))
    assert writers == {("arguments.py", "record_launch_facts")}
