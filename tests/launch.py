"""Starting the tiny training script under real launchers (torchrun / accelerate launch / python)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import tiny_task

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def launch_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def command(nproc: int, launcher: str, config_file=None, launch_args=(), script=None) -> list[str]:
    """The launcher's command line. With `config_file`, `accelerate launch --config_file` (the yaml decides the
    process count) followed by `launch_args` (e.g. --num_processes 2)."""
    script = str(script or SCRIPT)
    if config_file is not None:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
                *launch_args, script]
    if nproc == 1 and launcher == "python":
        return [sys.executable, script]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", script]


def run_tiny(out: Path, argv: list[str], nproc: int = 1, launcher: str = "python", timeout: int = 300,
             env: dict | None = None, config_file=None, launch_args=(), script=None):
    """Run the tiny task; returns (per-iteration train losses, final state dict). Success is judged by
    what rank 0 wrote, as gloo may abort at interpreter exit after a successful run. `env` adds variables;
    `config_file`/`launch_args`/`script`: see command()."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(command(nproc, launcher, config_file, launch_args, script) + argv + ["--out", str(out)],
                          env={**launch_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if not (out / "DONE").exists():
        raise AssertionError(f"run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    (metrics,) = glob.glob(str(out / "run-*" / "metrics.jsonl"))
    records = tiny_task.read_metrics(metrics)
    losses = {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}
    proc.records = records
    return losses, load_file(str(out / "final.safetensors")), proc


def assert_same_training(losses_a: dict, losses_b: dict, weights_a: dict, weights_b: dict,
                         loss_tol: float = 1e-5, rel_l2: float = 5e-3) -> None:
    """The equivalence tolerances of docs/scaling.md: per-step losses within 1e-5, every tensor within relative L2 5e-3."""
    assert losses_a.keys() == losses_b.keys() and losses_a
    for it in losses_a:
        assert abs(losses_a[it] - losses_b[it]) <= loss_tol, (it, losses_a[it], losses_b[it])
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        a, b = weights_a[name].double(), weights_b[name].double()
        rel = (a - b).norm() / max(a.norm(), 1e-12)
        assert rel <= rel_l2, (name, float(rel))


def assert_bitwise(weights_a: dict, weights_b: dict) -> None:
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
