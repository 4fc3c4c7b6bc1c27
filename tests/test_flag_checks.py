"""Flags that can only be wrong stop the run before its first iteration, with one sentence naming the flag;
from code, get_args raises ConfigError (never SystemExit)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import tiny_task
from launch import launch_env
from sat_accel import get_args, training_main
from sat_accel.errors import ConfigError

BASE = ["--train-data", "tiny:64", "--split", "1", "--batch-size", "8", "--train-iters", "2", "--num-workers", "0",
        "--no-progress"]


@pytest.mark.parametrize("flags, message", [
    (["--gradient-clipping", "nan"], "--gradient-clipping must be a finite number"),
    (["--lr-decay-ratio", "nan"], "--lr-decay-ratio must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--gradient-clipping", "-1"], "--gradient-clipping must be in [0.0, inf)"),
    (["--adam-beta2", "1.5"], "--adam-beta2 must be in [0.0, 1.0)"),
    (["--hidden-dropout", "1"], "--hidden-dropout must be in [0.0, 1.0)"),
    (["--train-data-weights", "nan"], "--train-data-weights must be a finite number"),
    (["--seed", "100000000000000000000000"], "--seed must be in [1, 9223372036854775808)"),
    (["--seed", "1e23"], "argument --seed: invalid int value: '1e23'"),
    (["--max-shard-size", "5XB"], "--max-shard-size '5XB' is not a size"),
    (["--unknown-flag", "3"], "unrecognized arguments: --unknown-flag 3"),
])
def test_get_args_from_code_raises_config_error_naming_the_flag(flags, message):
    with pytest.raises(ConfigError) as err:
        get_args(BASE + flags)
    assert message in str(err.value)


def test_save_under_a_file_or_unwritable_is_found_before_training(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="--save .* cannot be a folder: .*a_file is a file"):
        get_args(BASE + ["--save", str(tmp_path / "a_file" / "ckpt")])
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        import os
        if os.access(locked, os.W_OK):  # root ignores permissions: nothing to check here
            return
        with pytest.raises(ConfigError, match="--save .* is not writable"):
            get_args(BASE + ["--save", str(locked / "ckpt")])
    finally:
        locked.chmod(0o700)


def test_training_main_checks_args_changed_from_code(tmp_path):
    args = get_args(BASE + ["--summary-dir", str(tmp_path)])
    args.lr = float("nan")
    args.max_shard_size = "5XB"
    with pytest.raises(ConfigError, match="--lr must be a finite number.*--max-shard-size '5XB' is not a size"):
        training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)
    assert list(tmp_path.iterdir()) == []  # stopped before anything was written


def test_command_line_keeps_argparse_exit_with_one_sentence():
    code = "from sat_accel import get_args; get_args()"
    proc = subprocess.run([sys.executable, "-c", code, *BASE, "--gradient-clipping", "nan"], env=launch_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--gradient-clipping must be a finite number, got nan." in proc.stderr
