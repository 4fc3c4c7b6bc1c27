"""--async-save: the same checkpoint files as a synchronous save, written in the background from a CPU copy.

The kill -9 tests run with it too (test_checkpoint_crash.py, test_resume.py: parametrized `async_save`).
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import tiny_task
from launch import launch_env
from sat_accel.checkpoint_format import read_weights
from sat_accel.errors import CheckpointError
from sat_accel.training.async_save import AsyncCheckpointer, StoragePool, cpu_copy

ARGS = ["--train-data", "tiny:128", "--split", "1", "--batch-size", "8", "--lr", "5e-3", "--train-iters", "12",
        "--save-interval", "4", "--log-interval", "4", "--num-workers", "0", "--warmup", "0", "--no-progress",
        "--experiment-name", "run"]


def train(save_root, extra=()):
    from sat_accel import get_args, training_main

    args = get_args(ARGS + ["--save", str(save_root), *extra])
    return training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)


def run_dir(root):
    (path,) = glob.glob(os.path.join(root, "run-*"))
    return path


def training_state(folder):
    state = os.path.join(folder, "training_state")
    optimizer = torch.load(os.path.join(state, "optimizer.pt"), weights_only=True)
    counters = json.load(open(os.path.join(state, "trainer_state.json")))
    counters.pop("experiment_name")  # holds the start minute of each run
    return read_weights(folder)[0], optimizer, counters


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_async_checkpoints_equal_synchronous_ones_and_resume_exactly(tmp_path):
    sync_model = train(tmp_path / "sync")
    async_model = train(tmp_path / "async", ["--async-save", "--save-total-limit", "2"])
    sync_dir, async_dir = run_dir(tmp_path / "sync"), run_dir(tmp_path / "async")
    assert sorted(n for n in os.listdir(async_dir) if n.isdigit()) == ["12", "8"]  # retention after publishing
    assert open(os.path.join(async_dir, "latest")).read() == "12"
    assert not [n for n in os.listdir(async_dir) if n.startswith(".tmp-")]
    for iteration in ("8", "12"):  # the training went on while 8 was written: the copy is of iteration 8
        assert_same(training_state(os.path.join(sync_dir, iteration)),
                    training_state(os.path.join(async_dir, iteration)))
    assert_same(sync_model.state_dict(), async_model.state_dict())
    resumed = train(tmp_path / "resumed", ["--load", os.path.join(async_dir, "8"), "--async-save"])
    assert_same(resumed.state_dict(), sync_model.state_dict())


def test_cpu_copy_is_a_copy_and_keeps_ties():
    weight = torch.nn.Parameter(torch.ones(3, 2))
    state = {"a": weight, "b": weight, "view": weight[1], "opt": {"step": torch.tensor(3.0), "lr": [0.1, (0.9,)]}}
    snap = cpu_copy(state)
    with torch.no_grad():
        weight.fill_(7.0)
    assert snap["a"].eq(1).all() and snap["opt"]["lr"] == [0.1, (0.9,)]
    assert snap["a"].untyped_storage().data_ptr() == snap["b"].untyped_storage().data_ptr() \
        == snap["view"].untyped_storage().data_ptr() != weight.untyped_storage().data_ptr()
    assert snap["view"].storage_offset() == 2 and not snap["a"].requires_grad


def test_the_next_copy_reuses_the_previous_buffers_and_overwrites_them():
    weight = torch.nn.Parameter(torch.ones(3, 2))
    state = {"a": weight, "b": weight, "step": torch.tensor(3.0)}
    memo = {}
    first = cpu_copy(state, memo)
    pool = StoragePool()
    pool.refill(list(memo.values()))  # what AsyncCheckpointer.wait does once the writer is done
    with torch.no_grad():
        weight.fill_(7.0)
    second = cpu_copy({**state, "step": torch.tensor(4.0)}, {}, pool)
    assert second["a"].untyped_storage().data_ptr() == first["a"].untyped_storage().data_ptr() \
        == second["b"].untyped_storage().data_ptr()  # same memory, still one storage for the tied pair
    assert second["step"].untyped_storage().data_ptr() == first["step"].untyped_storage().data_ptr()
    assert second["a"].eq(7).all() and second["step"].item() == 4.0
    assert cpu_copy(torch.zeros(5), {}, pool).eq(0).all()  # no buffer of that size left: a fresh one


def test_a_failed_background_save_is_raised_with_the_previous_checkpoint_intact(tmp_path):
    import argparse

    accelerator = Accelerator(cpu=True)
    model = tiny_task.TinyModel()
    saver = AsyncCheckpointer(accelerator)
    args = argparse.Namespace(no_save_optim=True)
    saver.save(str(tmp_path / "ok"), 1, model, None, None, {}, args)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    saver.save(str(blocker / "run"), 2, model, None, None, {}, args)  # waits for 1, starts 2
    with pytest.raises(CheckpointError, match="in the background failed while preparing"):
        saver.wait()
    assert open(tmp_path / "ok" / "latest").read() == "1"
    saver.wait()  # the error is reported once


def test_sigterm_saves_and_waits_for_the_background_write(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "scripts", "train_tiny.py")
    argv = ARGS + ["--train-iters", "100000", "--save-interval", "100000", "--async-save", "--save", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, script] + argv + ["--out", str(tmp_path)], env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "run-*" / "metrics.jsonl")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert (tmp_path / "DONE").exists(), output[-3000:]
    folder = run_dir(tmp_path)
    latest = open(os.path.join(folder, "latest")).read()
    assert int(latest) > 0 and not [n for n in os.listdir(folder) if n.startswith(".tmp-")]
    saved = read_weights(os.path.join(folder, latest))[0]
    assert_same(saved, load_file(str(tmp_path / "final.safetensors")))
