"""Launched by the multi-process tests: trains the tiny task and writes, on the main process,
<out>/metrics.jsonl (via --summary-dir) and <out>/final.safetensors. Ends workers with a barrier and
os._exit(0) because gloo can abort at interpreter exit."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tiny_task  # noqa: E402
from sat_accel import training_main  # noqa: E402


def main() -> None:
    args, out, model_cls = tiny_task.worker_args(sys.argv[1:], "TinyTransformer")
    model = training_main(args, model_cls, tiny_task.forward_step, tiny_task.create_dataset,
                          forward_step_eval=tiny_task.forward_step_eval, handle_metrics_function=tiny_task.handle_metrics)
    tiny_task.finish_worker(args, model, out)


if __name__ == "__main__":
    main()
