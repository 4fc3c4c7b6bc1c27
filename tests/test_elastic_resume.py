"""Elastic resume: the saved data position is in samples of the global stream, so resuming with another batch
size, gradient accumulation or world size continues at exactly the next sample (each example once per epoch
across the boundary). forward_step records the dataset indices it consumes; before + after must equal the
stream of an uninterrupted run.

This file is also the training script the torchrun test starts: `python tests/test_elastic_resume.py ...`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_task  # noqa: E402
from launch import launch_env  # noqa: E402

N = 32  # examples: the runs below cross an epoch boundary
COMMON = ["--train-data", f"tiny:{N}", "--split", "1", "--lr", "1e-3", "--log-interval", "1", "--num-workers", "0",
          "--warmup", "0", "--experiment-name", "elastic", "--no-progress"]


class IndexedTiny(tiny_task.TinyDataset):
    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "index": index}


def create_dataset(path, args):
    return IndexedTiny(n=int(path.split(":")[1]))


def forward_step(data_iterator, model, args, timers):
    """Appends this rank's micro-batch indices (one JSON list per line) to $ELASTIC_RECORD-rank<r>.jsonl."""
    batch = next(data_iterator)
    with open(f"{os.environ['ELASTIC_RECORD']}-rank{args.rank}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(batch["index"].tolist()) + "\n")
    return F.cross_entropy(model(batch["x"]), batch["y"])


def train(argv: list[str]):
    from sat_accel import get_args, training_main

    args = get_args(argv)
    return args, training_main(args, tiny_task.TinyModel, forward_step, create_dataset)


def consumed(record: Path, world_size: int = 1) -> list[int]:
    """The global stream order of what the ranks consumed: micro-batch k of rank 0, then of rank 1, ..."""
    per_rank = [[json.loads(line) for line in Path(f"{record}-rank{r}.jsonl").read_text().splitlines()]
                for r in range(world_size)]
    assert len({len(batches) for batches in per_rank}) == 1
    return [i for step in zip(*per_rank) for batch in step for i in batch]


def run(tmp_path: Path, name: str, *flags: str, nproc: int = 1) -> list[int]:
    """Train (in this process, or under torchrun with `nproc` processes) recording indices as `name`."""
    record = tmp_path / name
    argv = [*COMMON, "--save", str(tmp_path / "ckpt"), *flags]
    if nproc == 1:
        os.environ["ELASTIC_RECORD"] = str(record)
        train(argv)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               os.path.abspath(__file__), *argv, "--out", str(tmp_path / name)]
        proc = subprocess.run(cmd, env={**launch_env(), "ELASTIC_RECORD": str(record)}, capture_output=True,
                              text=True, timeout=300)
        assert (tmp_path / name / "DONE").exists(), proc.stderr[-5000:]
    return consumed(record, nproc)


def run_folder(tmp_path: Path) -> str:
    (folder,) = (tmp_path / "ckpt").glob("elastic*")
    return str(folder)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[int]:
    """An uninterrupted run: 12 iterations x batch 4 = stream positions 0..47."""
    tmp = tmp_path_factory.mktemp("reference")
    return run(tmp, "ref", "--batch-size", "4", "--train-iters", "12")


def check_resume(before: list[int], after: list[int], reference: list[int]) -> None:
    print(f"indices before: {before}\nindices after:  {after}")
    assert before + after == reference[:len(before) + len(after)]
    assert sorted((before + after)[:N]) == list(range(N))  # each example once in the first epoch


@pytest.mark.parametrize("new_layout", [["--batch-size", "8"], ["--batch-size", "4", "--gradient-accumulation-steps", "2"]],
                         ids=["batch-4-to-8", "batch-4-to-4xGA2"])
def test_resume_with_another_batch_size_or_accumulation_continues_at_the_next_sample(tmp_path, reference,
                                                                                     new_layout):
    """The issue's case: 6 x batch 4, then --batch-size 8: the next sample read must be position 24, not 48."""
    before = run(tmp_path, "before", "--batch-size", "4", "--train-iters", "6")
    assert len(before) == 24
    after = run(tmp_path, "after", *new_layout, "--train-iters", "9", "--load", run_folder(tmp_path))
    assert len(after) == 24  # 3 iterations x 8 samples
    check_resume(before, after, reference)


@pytest.mark.multiprocess
def test_resume_from_one_process_on_two_torchrun_processes(tmp_path, reference):
    before = run(tmp_path, "before", "--batch-size", "4", "--train-iters", "6")
    after = run(tmp_path, "after", "--batch-size", "2", "--train-iters", "9", "--load", run_folder(tmp_path), nproc=2)
    assert len(after) == 12  # 3 iterations x 2 processes x 2
    check_resume(before, after, reference)


def main() -> None:
    argv = sys.argv[1:]
    out = argv[argv.index("--out") + 1]
    Path(out).mkdir(parents=True, exist_ok=True)
    args, model = train(argv[: argv.index("--out")] + argv[argv.index("--out") + 2:])
    tiny_task.finish_worker(args, model, out)


if __name__ == "__main__":
    main()
