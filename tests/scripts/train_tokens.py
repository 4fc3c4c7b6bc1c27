"""Launched by the --group-by-length tests: the variable-length token task (tiny_task.TinyTokens) under
training_main; rank 0 writes <out>/final.safetensors and the metrics. Ends workers like train_tiny.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tiny_task  # noqa: E402
from sat_accel import get_args, training_main  # noqa: E402


def main() -> None:
    argv = sys.argv[1:]
    out = argv[argv.index("--out") + 1]
    argv = argv[: argv.index("--out")] + argv[argv.index("--out") + 2:]
    model_name = "TinyTokenModel"
    if "--model" in argv:
        model_name = argv[argv.index("--model") + 1]
        argv = argv[: argv.index("--model")] + argv[argv.index("--model") + 2:]
    args = get_args(argv + ["--summary-dir", out, "--experiment-name", "run", "--no-progress"])
    model = training_main(args, getattr(tiny_task, model_name), tiny_task.forward_step_tokens,
                          tiny_task.create_token_dataset)
    tiny_task.finish_worker(args, model, out)


if __name__ == "__main__":
    main()
