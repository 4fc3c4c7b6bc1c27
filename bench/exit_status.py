"""How often does a successful 2-process CPU run exit 0? (gloo may abort at interpreter exit.)

    python bench/exit_status.py [--runs 20] [--launcher torchrun|accelerate]

Each run trains the tiny task for a few iterations through the real launcher, without os._exit, and
the exit status of the launcher is counted.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import tiny_task
from sat_accel import get_args, training_main
args = get_args(["--train-data", "tiny:64", "--split", "1", "--train-iters", "4", "--batch-size", "4",
                 "--num-workers", "1", "--no-progress", "--log-interval", "4", "--summary-dir", {out!r}])
training_main(args, tiny_task.TinyModel, tiny_task.forward_step, tiny_task.create_dataset)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--launcher", choices=["torchrun", "accelerate"], default="torchrun")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "run.py"
        script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), out=tmp))
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                  if opts.launcher == "torchrun" else
                  [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        codes = [subprocess.run(launch + [str(script)], env=env, capture_output=True).returncode
                 for _ in range(opts.runs)]
    print(f"{opts.launcher}: {codes.count(0)}/{opts.runs} runs exited 0; exit codes {codes}")


if __name__ == "__main__":
    main()
