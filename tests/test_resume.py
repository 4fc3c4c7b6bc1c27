"""Exact resume through training_main: a run stopped after a save (--exit-interval, SIGKILL at a random
moment, 2 processes) and resumed with --load ends with the same weights, bit for bit, as a run that was
never interrupted (CPU fp32, same thread count). The model uses dropout, so the RNG states matter.

This file is also the training script the subprocess tests start: `python tests/test_resume.py ...`.
"""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_task  # noqa: E402
from launch import launch_env  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

COMMON = ["--train-data", "tiny:256", "--split", "1", "--batch-size", "8", "--lr", "5e-3", "--train-iters", "24",
          "--save-interval", "6", "--log-interval", "6", "--num-workers", "0", "--warmup", "0.25",
          "--experiment-name", "resume", "--no-progress"]


class DropoutMLP(torch.nn.Module):
    def __init__(self, args=None):
        super().__init__()
        self.inp = torch.nn.Linear(8, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.out = torch.nn.Linear(32, 2)

    def forward(self, x):
        return self.out(F.dropout(F.gelu(self.norm(self.inp(x))), p=0.3, training=self.training))


def forward_step(data_iterator, model, args, timers):
    batch = next(data_iterator)
    if os.environ.get("RESUME_TEST_SLEEP"):
        time.sleep(float(os.environ["RESUME_TEST_SLEEP"]))  # widen the window for a random SIGKILL
    return F.cross_entropy(model(batch["x"]), batch["y"])


def train(argv):
    from sat_accel import get_args, training_main

    args = get_args(argv)
    return args, training_main(args, DropoutMLP, forward_step, tiny_task.create_dataset)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _run_dir(save_root):
    (run_dir,) = glob.glob(os.path.join(save_root, "resume-*"))
    return run_dir


# ---------------------------------------------------------------- in process
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("a")
    _, model = train(COMMON + ["--save", str(root)])
    return _state(model), _run_dir(str(root))


def test_exit_interval_then_load_is_bitwise(tmp_path, uninterrupted):
    _, stopped = train(COMMON + ["--save", str(tmp_path), "--exit-interval", "12"])
    run_dir = _run_dir(str(tmp_path))
    assert open(os.path.join(run_dir, "latest")).read() == "12"
    assert not torch.equal(_state(stopped)["out.weight"], uninterrupted[0]["out.weight"])
    _, resumed = train(COMMON + ["--save", str(tmp_path), "--load", run_dir])
    assert _run_dir(str(tmp_path)) == run_dir  # the loaded run's experiment folder is kept
    assert open(os.path.join(run_dir, "latest")).read() == "24"
    _assert_bitwise(_state(resumed), uninterrupted[0])


def test_resume_from_an_older_iteration_folder(tmp_path, uninterrupted):
    _, resumed = train(COMMON + ["--save", str(tmp_path), "--load", os.path.join(uninterrupted[1], "6")])
    _assert_bitwise(_state(resumed), uninterrupted[0])


def test_checkpoints_of_the_uninterrupted_run(uninterrupted):
    run_dir = uninterrupted[1]
    assert sorted(int(n) for n in os.listdir(run_dir) if n.isdigit()) == [6, 12, 18, 24]
    final = load_file(os.path.join(run_dir, "24", "model.safetensors"))
    _assert_bitwise(final, uninterrupted[0])


def test_weights_only_checkpoint_resumes_with_rewarmup(tmp_path, sat_log):
    _, _ = train(COMMON + ["--save", str(tmp_path), "--exit-interval", "12", "--no-save-optim"])
    run_dir = _run_dir(str(tmp_path))
    assert not os.path.exists(os.path.join(run_dir, "12", "training_state"))
    with sat_log.at_level("WARNING"):
        _, resumed = train(COMMON + ["--save", str(tmp_path), "--load", run_dir, "--no-save-optim"])
    assert "optimizer state is absent" in sat_log.text
    assert open(os.path.join(run_dir, "latest")).read() == "24"


def test_finetune_starts_at_iteration_zero(tmp_path, uninterrupted):
    _, model = train(COMMON + ["--save", str(tmp_path), "--load", uninterrupted[1], "--mode", "finetune",
                               "--train-iters", "6", "--experiment-name", "ft"])
    (run_dir,) = glob.glob(os.path.join(str(tmp_path), "ft-*"))
    assert sorted(n for n in os.listdir(run_dir) if n.isdigit()) == ["6"]


# ---------------------------------------------------------------- subprocesses
def _script(out, argv, nproc=1):
    if nproc == 1:
        cmd = [sys.executable, os.path.abspath(__file__)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               os.path.abspath(__file__)]
    return cmd + argv + ["--out", str(out)]


def _run_script(out, argv, nproc=1, env=None):
    proc = subprocess.run(_script(out, argv, nproc), env=env or launch_env(), capture_output=True, text=True,
                          timeout=300)
    if not os.path.exists(os.path.join(out, "final.safetensors")):
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return load_file(os.path.join(out, "final.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--async-save"]], ids=["sync", "async_save"])
def test_sigkill_at_a_random_moment_then_load_is_bitwise(tmp_path, extra):
    reference = _run_script(tmp_path / "a", COMMON + ["--save", str(tmp_path / "a")])
    env = {**launch_env(), "RESUME_TEST_SLEEP": "0.03"}
    out = tmp_path / "b"
    proc = subprocess.Popen(_script(out, COMMON + ["--save", str(out)] + extra), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not glob.glob(str(out / "resume-*" / "latest")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = _run_dir(str(out))
    killed_at = int(open(os.path.join(run_dir, "latest")).read())
    assert 6 <= killed_at < 24, killed_at
    resumed = _run_script(out, COMMON + ["--save", str(out), "--load", run_dir])
    _assert_bitwise(resumed, reference)


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--async-save"]], ids=["sync", "async_save"])
def test_two_process_exit_interval_then_load_is_bitwise(tmp_path, extra):
    reference = _run_script(tmp_path / "a", COMMON + ["--save", str(tmp_path / "a")], nproc=2)
    out = tmp_path / "b"
    _run_script(out, COMMON + ["--save", str(out), "--exit-interval", "12"] + extra, nproc=2)
    run_dir = _run_dir(str(out))
    assert sorted(os.listdir(os.path.join(run_dir, "12", "training_state"))) == [
        "args.json", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json"]
    os.remove(os.path.join(out, "final.safetensors"))
    resumed = _run_script(out, COMMON + ["--save", str(out), "--load", run_dir], nproc=2)
    _assert_bitwise(resumed, reference)


def main() -> None:
    argv = sys.argv[1:]
    out = argv[argv.index("--out") + 1]
    args, model = train(argv[: argv.index("--out")] + argv[argv.index("--out") + 2:])
    tiny_task.finish_worker(args, model, out)

if __name__ == "__main__":
    main()
