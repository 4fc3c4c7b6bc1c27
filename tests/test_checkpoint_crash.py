"""Crash safety: a process killed with SIGKILL at a random moment of a save never leaves `latest` naming an
incomplete checkpoint, and every numbered folder it left behind loads with the values of its iteration."""
import argparse
import functools
import os
import random
import signal
import time

import pytest
import torch
from accelerate import Accelerator

from sat_accel.checkpoint_format import read_weights
from sat_accel.training import checkpoint as ckpt
from sat_accel.training.async_save import AsyncCheckpointer

TRIALS = 20


class Big(torch.nn.Module):
    """~32 MB of weights (and as much optimizer momentum), so that a save takes long enough to be hit."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(1024, 1024, bias=False) for _ in range(8))


def _child_saves_forever(accelerator, run_dir: str, start: int, asynchronous: bool) -> None:
    model = Big()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():  # optimizer state without autograd (its threads do not survive fork)
        opt.state[p]["momentum_buffer"] = torch.ones_like(p)
    args = argparse.Namespace(no_save_optim=False, save_total_limit=2, max_shard_size="12MB")
    # --async-save: the weights change right after save() returns, while the background write goes on
    save = AsyncCheckpointer(accelerator).save if asynchronous else functools.partial(ckpt.save_checkpoint, accelerator)
    for iteration in range(start, start + 1000):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(iteration))
        save(run_dir, iteration, model, opt, None, {"iteration": iteration}, args)


def _check_run(run_dir: str) -> int:
    folder, iteration = ckpt.resolve_load_dir(run_dir)
    for name in [n for n in os.listdir(run_dir) if n.isdigit() and n != "0"]:
        state, _ = read_weights(os.path.join(run_dir, name))
        assert len(state) == 8, name
        assert all(bool((t == float(name)).all()) for t in state.values()), f"torn checkpoint {name}"
        assert os.path.isfile(os.path.join(run_dir, name, "training_state", "trainer_state.json"))
    assert os.path.basename(folder) == str(iteration)
    return iteration


def _wait_for_a_save_after(run_dir: str, iteration: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if int(open(os.path.join(run_dir, "latest")).read()) > iteration:
                return
        except (OSError, ValueError):  # being replaced right now
            pass
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async_save"])
def test_sigkill_during_saves_never_breaks_latest(tmp_path, asynchronous):
    accelerator = Accelerator(cpu=True)
    run_dir = str(tmp_path)
    ckpt.save_checkpoint(accelerator, run_dir, 0, Big(), None, None, {}, argparse.Namespace())  # warm imports
    rng = random.Random(0)
    last, kills_mid_save = 0, 0
    for trial in range(TRIALS):
        pid = os.fork()
        if pid == 0:  # child: save until killed; never return into pytest
            try:
                _child_saves_forever(accelerator, run_dir, last + 1, asynchronous)
            finally:
                os._exit(1)
        _wait_for_a_save_after(run_dir, last)  # a loaded machine may need seconds for the first one
        time.sleep(rng.uniform(0.02, 0.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills_mid_save += any(n.startswith(".tmp-") for n in os.listdir(run_dir))
        iteration = _check_run(run_dir)
        assert iteration >= last
        last = iteration
    assert last > 0
    assert kills_mid_save >= TRIALS // 4  # the kills really landed inside saves
    assert len([n for n in os.listdir(run_dir) if n.isdigit()]) <= 3
