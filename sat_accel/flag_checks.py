"""Value checks of the flags that can only be wrong, run by get_args and again by training_main (args may be
changed from code in between), so a run stops before its first iteration with one sentence naming the flag —
not after the training time is spent (a bad --max-shard-size or --save at the first save) or never (NaN
clipping silently off, NaN weights saved)."""
from __future__ import annotations

import argparse
import math
import os

from .checkpoint_format import parse_size
from .errors import ConfigError

# flag -> (lowest, highest, whether the bounds are included), for values that are set.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "gradient_clipping": (0.0, math.inf, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "adam_beta1": (0.0, 1.0, True, False),
    "adam_beta2": (0.0, 1.0, True, False),
    "adam_eps": (0.0, math.inf, False, False),
    "hidden_dropout": (0.0, 1.0, True, False),
    "attention_dropout": (0.0, 1.0, True, False),
    "layernorm_epsilon": (0.0, math.inf, False, False),
    "exit_duration_in_mins": (0.0, math.inf, False, False),
    "lr_decay_iters": (1, math.inf, True, False),
    "max_skipped_iters": (1, math.inf, True, False),
    "prefetch_factor": (1, math.inf, True, False),
    "checkpoint_num_layers": (1, math.inf, True, False),
    "load_iteration": (0, math.inf, True, False),
    "seed": (1, 2**63, True, False),  # torch.manual_seed takes at most a signed 64-bit value
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def value_problems(args: argparse.Namespace) -> list[str]:
    """Non-finite floats, values out of range, an unparsable --max-shard-size, an unwritable --save."""
    problems = [f"{flag(name)} must be a finite number, got {value!r}."
                for name, value in vars(args).items() if _has_non_finite(value)]
    for name, (low, high, low_ok, high_ok) in RANGES.items():
        value = getattr(args, name, None)
        if value is None or isinstance(value, bool) or _has_non_finite(value):
            continue
        if name == "seed" and int(value) != value:
            problems.append(f"--seed must be an integer, got {value!r}.")
        elif not ((low <= value if low_ok else low < value) and (value <= high if high_ok else value < high)):
            problems.append(f"{flag(name)} must be in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}, "
                            f"got {value!r}.")
    if getattr(args, "max_shard_size", None) is not None:
        try:
            parse_size(args.max_shard_size)
        except ConfigError as e:
            problems.append(str(e))
    for name in ("save", "summary_dir"):
        problem = unwritable_folder_problem(name, getattr(args, name, None))
        if problem:
            problems.append(problem)
    return problems


def _has_non_finite(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


def unwritable_folder_problem(name: str, path: str | None) -> str | None:
    """One sentence when `path` cannot become a writable folder (a file, or under one; no write permission)."""
    if not path:
        return None
    current = os.path.abspath(os.path.expanduser(str(path)))
    while not os.path.exists(current):
        current = os.path.dirname(current)
    if not os.path.isdir(current):
        return f"{flag(name)} {path} cannot be a folder: {current} is a file; pass a folder path."
    if not os.access(current, os.W_OK | os.X_OK):
        return f"{flag(name)} {path} is not writable ({current} denies writing); pass a folder you can write to."
    return None
