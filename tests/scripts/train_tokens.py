"""Launched by the --group-by-length tests: the variable-length token task (tiny_task.TinyTokens) under
training_main; rank 0 writes <out>/final.safetensors and the metrics. Ends workers like train_tiny.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tiny_task  # noqa: E402
from sat_accel import training_main  # noqa: E402


def main() -> None:
    args, out, model_cls = tiny_task.worker_args(sys.argv[1:], "TinyTokenModel")
    model = training_main(args, model_cls, tiny_task.forward_step_tokens, tiny_task.create_token_dataset)
    tiny_task.finish_worker(args, model, out)


if __name__ == "__main__":
    main()
