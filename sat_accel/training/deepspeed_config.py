"""Our flags + optional config files -> one DeepSpeed config and Accelerate's DeepSpeedPlugin.

Who decides what (docs/scaling.md, "Who decides what"):
* Our flags own the ZeRO stage, the micro-batch size, gradient accumulation, gradient clipping and the
  precision; sat_accel owns the optimizer (AdamW from --lr/--weight-decay/--adam-*) and SAT's LR schedule.
* A config source (a `--deepspeed_config` JSON file; an accelerate yaml's `deepspeed_config:` keys or its
  `deepspeed_config_file`) may leave an owned key out, set it to "auto" or repeat the flag's value; any other
  value is a ConfigError naming both. `--zero-stage 0` (the default) means "take the stage from the config".
  `optimizer` / `scheduler` sections are refused: they would silently replace ours.
* Every other key in a config source goes to DeepSpeed as written. Keys nobody set get our defaults
  (`OUR_DEFAULTS`), chosen so DeepSpeed trains exactly like DDP.

Accelerate lets the DeepSpeed config's gradient accumulation win silently over the Accelerator's; building
the whole config here, from the flags, is what keeps the two equal.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
from typing import Any

from accelerate.utils import InitProcessGroupKwargs

from ..errors import ConfigError

logger = logging.getLogger(__name__)

AUTO = "auto"
# Why each default: DeepSpeed's own choices would make a ZeRO run differ from the DDP run of the same flags.
OUR_DEFAULTS: dict[str, Any] = {
    # Offload keeps our torch AdamW (same math as DDP, no C++ op build) instead of swapping in
    # DeepSpeedCPUAdam; set it true in your JSON for DeepSpeedCPUAdam's speed on big models.
    "zero_force_ds_cpu_optimizer": False,
    # ZeRO-3 otherwise replaces torch.nn.functional.linear process-wide with its own autograd function.
    "zero_optimization.memory_efficient_linear": False,
    "wall_clock_breakdown": False,
}
REFUSED_SECTIONS = {
    "optimizer": "sat_accel builds AdamW from --lr, --weight-decay and --adam-beta1/--adam-beta2/--adam-eps",
    "scheduler": "sat_accel runs SAT's LR schedule from --lr-decay-style, --warmup and --lr-decay-iters",
}
# accelerate launch (yaml `deepspeed_config:` keys or its CLI flags) -> DeepSpeed key, value parser
_LAUNCHER_ENV = {
    "ACCELERATE_DEEPSPEED_ZERO_STAGE": ("zero_optimization.stage", int),
    "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": ("gradient_accumulation_steps", int),
    "ACCELERATE_GRADIENT_CLIPPING": ("gradient_clipping", float),
    "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": ("zero_optimization.offload_optimizer.device", str),
    "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": ("zero_optimization.offload_param.device", str),
    "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": (
        "zero_optimization.stage3_gather_16bit_weights_on_model_save", lambda v: v.lower() == "true"),
}
# "auto" values Accelerate can only fill from `model.config.hidden_size`; we use --hidden-size instead.
_HIDDEN_SIZE_KEYS = {
    "zero_optimization.reduce_bucket_size": lambda h: h * h,
    "zero_optimization.stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "zero_optimization.stage3_param_persistence_threshold": lambda h: 10 * h,
}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def wants_deepspeed(args: argparse.Namespace) -> bool:
    """DeepSpeed is on with --zero-stage N>0, --deepspeed_config, or a DeepSpeed accelerate config."""
    return (getattr(args, "zero_stage", 0) > 0 or getattr(args, "deepspeed_config", None) is not None
            or _env_true("ACCELERATE_USE_DEEPSPEED"))


def requested_precision(args: argparse.Namespace) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "no"


# ---------------------------------------------------------------- dotted-key helpers
def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the form Accelerate's plugin and our conflict messages use."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def get_dotted(config: dict, key: str, default: Any = None) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(config: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def deep_merge(base: dict, extra: dict) -> dict:
    """A copy of `base` with every key of `extra` written over it (nested dicts merged)."""
    out = copy.deepcopy(base)
    for key, value in flatten(extra).items():
        set_dotted(out, key, copy.deepcopy(value))
    return out


# ---------------------------------------------------------------- config sources
def load_json_config(path_or_dict: str | dict, what: str = "--deepspeed_config") -> dict:
    """A DeepSpeed JSON file (or an already-loaded dict), with errors that name the file and line."""
    if isinstance(path_or_dict, dict):
        return copy.deepcopy(path_or_dict)
    path = os.path.expanduser(str(path_or_dict))
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read ({e.strerror}); give the path of a DeepSpeed JSON "
                          "config file.") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}; "
                          "fix the file (DeepSpeed configs are plain JSON, no comments or trailing commas).") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object ({{...}}), got {type(config).__name__}.")
    return config


def launcher_sources() -> list[tuple[str, dict]]:
    """What `accelerate launch` passed on from a yaml (or its CLI): the `deepspeed_config:` keys it exports
    as ACCELERATE_* variables, and the JSON named by `deepspeed_config_file`."""
    values: dict = {}
    for env, (key, parse) in _LAUNCHER_ENV.items():
        raw = os.environ.get(env)
        if raw not in (None, "", AUTO):
            set_dotted(values, key, parse(raw))
    sources = [("the accelerate config", values)] if values else []
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file and config_file.lower() != "none":
        sources.append((f"the accelerate config's deepspeed_config_file {config_file}",
                        load_json_config(config_file, "deepspeed_config_file")))
        clashing = {f for f in os.environ.get("ACCELERATE_CONFIG_DS_FIELDS", "").split(",")
                    if f and f not in ("deepspeed_config_file", "zero3_init_flag", "deepspeed_multinode_launcher")}
        if clashing:
            raise ConfigError(f"The accelerate config sets deepspeed_config_file and also {sorted(clashing)}; "
                              "put those values into the JSON file and keep only deepspeed_config_file.")
    return sources


def config_sources(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Every config source of this run, each as (name for messages, nested dict)."""
    sources = launcher_sources()
    if getattr(args, "deepspeed_config", None) is not None:
        where = args.deepspeed_config if isinstance(args.deepspeed_config, str) else "(dict)"
        sources.append((f"--deepspeed_config {where}", load_json_config(args.deepspeed_config)))
    return sources


# ---------------------------------------------------------------- the rule
def owned_values(args: argparse.Namespace, stage: int, precision: str) -> dict[str, tuple[str, Any]]:
    """DeepSpeed key -> (flag that owns it, value the flags give)."""
    owned = {
        "zero_optimization.stage": ("--zero-stage", stage),
        "train_micro_batch_size_per_gpu": ("--batch-size", args.batch_size),
        "gradient_accumulation_steps": ("--gradient-accumulation-steps", args.gradient_accumulation_steps),
        "gradient_clipping": ("--gradient-clipping", float(args.gradient_clipping)),
        "fp16.enabled": ("--fp16", precision == "fp16"),
        "bf16.enabled": ("--bf16", precision == "bf16"),
    }
    if stage == 3:  # model.safetensors is the consolidated model: ZeRO-3 must gather it
        owned["zero_optimization.stage3_gather_16bit_weights_on_model_save"] = (
            "sat_accel (ZeRO-3 must gather the weights for model.safetensors)", True)
    return owned


def _stage(args: argparse.Namespace, sources: list[tuple[str, dict]]) -> int:
    """--zero-stage when given, else the stage a config source sets (disagreements are reported by
    _source_conflicts), else 0."""
    if args.zero_stage > 0:
        return args.zero_stage
    for _, config in sources:
        stage = get_dotted(config, "zero_optimization.stage")
        if stage not in (None, AUTO):
            return int(stage)
    return 0


def _source_conflicts(sources: list[tuple[str, dict]]) -> list[str]:
    """Two config sources that both set a key to different concrete values."""
    seen: dict[str, tuple[str, Any]] = {}
    problems = []
    for name, config in sources:
        for key, value in flatten(config).items():
            if value == AUTO:
                continue
            if key in seen and seen[key][1] != value:
                problems.append(f"{seen[key][0]} sets {key}={seen[key][1]!r} but {name} sets {value!r}")
            seen.setdefault(key, (name, value))
    return problems


def _flag_conflicts(owned: dict[str, tuple[str, Any]], sources: list[tuple[str, dict]],
                    world_size: int) -> list[str]:
    problems = []
    for name, config in sources:
        for section, why in REFUSED_SECTIONS.items():
            if section in config:
                problems.append(f"{name} has an '{section}' section, but {why}: remove the section")
        for key, (flag, value) in owned.items():
            found = get_dotted(config, key)
            if found not in (None, AUTO) and found != value:
                problems.append(f"{name} sets {key}={found!r} but {flag} gives {value!r}: change one of them "
                                "or set the key to \"auto\"")
        total = get_dotted(config, "train_batch_size")
        expected = owned["train_micro_batch_size_per_gpu"][1] * owned["gradient_accumulation_steps"][1] * world_size
        if total not in (None, AUTO) and total != expected:
            problems.append(f"{name} sets train_batch_size={total!r} but --batch-size x "
                            f"--gradient-accumulation-steps x {world_size} processes = {expected}")
    return problems


def build_config(args: argparse.Namespace, precision: str, world_size: int | None = None) -> dict:
    """The complete DeepSpeed config for this run (nested dict). Raises ConfigError listing every conflict
    between our flags and the config sources, or between two sources."""
    world_size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    sources = config_sources(args)
    problems = _source_conflicts(sources)
    stage = _stage(args, sources)
    owned = owned_values(args, stage, precision)
    problems += _flag_conflicts(owned, sources, world_size)
    if problems:
        raise ConfigError("DeepSpeed settings conflict: " + "; ".join(problems) + ".")
    config: dict = {"train_batch_size": AUTO, "zero_optimization": {}}
    for key, value in OUR_DEFAULTS.items():
        set_dotted(config, key, value)
    for _, source in sources:
        config = deep_merge(config, source)
    for key, (_, value) in owned.items():
        # A precision section from a file gets its 'enabled' from the flag; an absent one is added by
        # Accelerate's set_mixed_precision (its defaults, e.g. fp16 auto_cast).
        if not key.endswith(".enabled") or key.split(".")[0] in config:
            set_dotted(config, key, value)
    _fill_hidden_size_autos(config, getattr(args, "hidden_size", None))
    return config


def _fill_hidden_size_autos(config: dict, hidden_size: int | None) -> None:
    for key, rule in _HIDDEN_SIZE_KEYS.items():
        if get_dotted(config, key) == AUTO:
            if not hidden_size:
                raise ConfigError(f"The DeepSpeed config sets {key} to \"auto\" but --hidden-size is unknown; "
                                  "give a number in the config.")
            set_dotted(config, key, rule(hidden_size))


# ---------------------------------------------------------------- plugin
def check_deepspeed_installed() -> None:
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("This run asks for DeepSpeed (--zero-stage, --deepspeed_config or an accelerate config "
                          "with distributed_type: DEEPSPEED) but it is not installed: pip install "
                          "'sat-accel[deepspeed]', or launch with accelerate_configs/multi_gpu.yaml for plain DDP.")


def build_plugin(args: argparse.Namespace, has_gpu: bool, precision: str | None = None):
    """A DeepSpeedPlugin whose config is exactly `build_config(...)` when DeepSpeed is asked for, else None."""
    if not wants_deepspeed(args):
        return None
    check_deepspeed_installed()
    from accelerate.utils import DeepSpeedPlugin

    config = build_config(args, precision or requested_precision(args))
    zero = config["zero_optimization"]
    plugin = DeepSpeedPlugin(
        zero_stage=zero["stage"], gradient_accumulation_steps=config["gradient_accumulation_steps"],
        gradient_clipping=config["gradient_clipping"],
        offload_optimizer_device=get_dotted(zero, "offload_optimizer.device", "none"),
        offload_param_device=get_dotted(zero, "offload_param.device", "none"),
        zero3_save_16bit_model=bool(zero.get("stage3_gather_16bit_weights_on_model_save", False)),
        # Models are built after the Accelerator: zero.Init would partition transformers models before
        # --load can fill them. ACCELERATE_DEEPSPEED_ZERO3_INIT=true (yaml zero3_init_flag) still turns it on.
        zero3_init_flag=zero["stage"] == 3 and _env_true("ACCELERATE_DEEPSPEED_ZERO3_INIT"))
    # The plugin's own config lacks our keys and writes gradient_clipping only when it is truthy (0 would
    # leave the choice to Accelerate/DeepSpeed defaults): write every value explicitly.
    for key, value in flatten(config).items():
        set_dotted(plugin.deepspeed_config, key, value)
    if os.environ.get("RANK", "0") == "0":
        logger.info("DeepSpeed config: %s", json.dumps(plugin.deepspeed_config, sort_keys=True, default=str))
    return plugin


def process_group_kwargs(has_gpu: bool) -> list:
    """DeepSpeed on CPU needs gloo (and must not be combined with cpu=True, which drops DeepSpeed);
    on GPU Accelerate's default (nccl) is right."""
    return [] if has_gpu else [InitProcessGroupKwargs(backend="gloo")]
