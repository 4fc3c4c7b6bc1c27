"""Two "machines" on one box: accelerate_configs/multi_node.yaml launched twice on loopback (machine_rank 0
and 1, one process each), exactly as the yaml's header tells users to run it on two hosts, trains like a
2-process run on one machine."""
import socket
import subprocess
from pathlib import Path

import pytest

from launch import assert_bitwise, assert_same_training, command, launch_env, run_tiny
import tiny_task

CONFIG = Path(__file__).resolve().parent.parent / "accelerate_configs" / "multi_node.yaml"
COMMON = ["--train-data", "tiny:96", "--split", "1", "--train-iters", "8", "--log-interval", "1", "--lr", "3e-3",
          "--warmup", "0.25", "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6", "--batch-size", "4"]

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_machine(rank: int, port: int, out: Path) -> subprocess.Popen:
    launch_args = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", str(port), "--num_processes", "2"]
    log = open(out / f"machine{rank}.log", "w")
    return subprocess.Popen(command(2, "accelerate", config_file=CONFIG, launch_args=launch_args)
                            + COMMON + ["--out", str(out)], env=launch_env(), stdout=log, stderr=subprocess.STDOUT)


def test_two_machines_on_loopback_equal_one_machine(tmp_path):
    out = tmp_path / "two_machines"
    out.mkdir()
    port = free_port()
    machines = [start_machine(rank, port, out) for rank in (0, 1)]
    try:
        codes = [m.wait(timeout=240) for m in machines]
    finally:
        for machine in machines:
            if machine.poll() is None:
                machine.kill()
    logs = "\n".join((out / f"machine{r}.log").read_text()[-3000:] for r in (0, 1))
    assert (out / "DONE").exists(), f"exit codes {codes}:\n{logs}"
    records = tiny_task.read_metrics(next(out.glob("run-*/metrics.jsonl")))
    losses = {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}
    from safetensors.torch import load_file

    weights = load_file(str(out / "final.safetensors"))
    one_losses, one_weights, _ = run_tiny(tmp_path / "one_machine", COMMON, nproc=2, launcher="torchrun")
    assert_same_training(one_losses, losses, one_weights, weights)
    assert_bitwise(one_weights, weights)   # same world size and collectives: the same numbers
