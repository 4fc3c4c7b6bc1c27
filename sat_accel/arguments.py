"""Command-line flags with SAT's names and defaults, validated in one place.

`get_args()` is the entry point of every script: it parses the flags, checks them together
(`validate_args`), fills in rank / world size / device from the launcher environment and seeds
python, numpy and torch. It never starts a process group: Accelerate does that in training_main.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import sys
from typing import Sequence

import numpy as np
import torch

from .checkpoint_format import resolve_config_paths
from .data.splits import parse_split
from .errors import ConfigError
from .flag_checks import value_problems
from .sat_flags import (add_deepspeed_launcher_args, add_sat_data_flags, add_sat_model_flags,
                        add_sat_training_flags, add_text_generate_args, add_tokenization_args,
                        log_noted_flags, refused_flag_problems)

__all__ = ["get_args", "build_parser", "validate_args", "add_model_config_args", "add_training_args",
           "add_evaluation_args", "add_data_args", "add_tokenization_args", "add_text_generate_args",
           "set_random_seed", "reset_random_seed", "update_args_with_file", "overwrite_args_by_dict",
           "initialize_distributed"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_ITERS = 10000


def _iterable_dataset_value(value: str) -> bool:
    """SAT's `--iterable-dataset [custom]`: the bare flag means True; 'custom' (the dataset yields whole batches)
    is refused with the way out."""
    if value == "custom":
        raise argparse.ArgumentTypeError("'custom' (a dataset that yields whole batches) is not supported; yield "
                                         "single examples and let --batch-size batch them, or pass the bare flag")
    raise argparse.ArgumentTypeError(f"takes no value except SAT's 'custom', got {value!r}; pass the bare flag")


def add_model_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Architecture flags (SAT group 'model'); these are what model_config.json records."""
    group = parser.add_argument_group("model", "model configuration")
    group.add_argument("--num-layers", type=int, default=6, help="number of transformer layers")
    group.add_argument("--hidden-size", type=int, default=1024, help="transformer hidden size")
    group.add_argument("--num-attention-heads", type=int, default=16, help="number of attention heads")
    group.add_argument("--vocab-size", type=int, default=100, help="rows of the word embedding")
    group.add_argument("--max-sequence-length", type=int, default=512,
                       help="rows of the position embedding (longest sequence, in tokens)")
    group.add_argument("--layernorm-order", default="pre", choices=["pre", "post", "sandwich"],
                       help="where layernorms sit around attention/MLP")
    group.add_argument("--inner-hidden-size", type=int, default=None,
                       help="MLP inner size; None means 4 x hidden size")
    group.add_argument("--hidden-size-per-attention-head", type=int, default=None,
                       help="per-head size; None means hidden size / heads")
    group.add_argument("--hidden-dropout", type=float, default=0.1, help="dropout on embeddings and block outputs")
    group.add_argument("--attention-dropout", type=float, default=0.1, help="dropout on attention probabilities")
    group.add_argument("--layernorm-epsilon", type=float, default=1e-5, help="layernorm epsilon")
    group.add_argument("--skip-init", action="store_true",
                       help="skip random weight init (weights will be loaded right after)")
    group.add_argument("--model-parallel-size", type=int, default=1,
                       help="tensor model parallelism (only 1 is supported; accepted for SAT scripts)")
    add_sat_model_flags(group)
    return parser


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Loop, optimizer, precision, logging and checkpoint flags (SAT group 'train' plus ours)."""
    group = parser.add_argument_group("train", "training configuration")
    group.add_argument("--experiment-name", default="MyModel",
                       help="run name; '-%%m-%%d-%%H-%%M' is appended (kept when resuming)")
    group.add_argument("--train-iters", type=int, default=None,
                       help=f"optimizer steps in total ({DEFAULT_TRAIN_ITERS} if neither this nor --epochs)")
    group.add_argument("--epochs", type=int, default=None, help="passes over the training data instead of --train-iters")
    group.add_argument("--batch-size", type=int, default=4, help="micro-batch size per process (examples)")
    group.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    group.add_argument("--mode", default="pretrain", choices=["pretrain", "finetune", "inference"],
                       help="pretrain resumes --load fully; finetune loads weights at iteration 0")
    group.add_argument("--seed", type=int, default=1234, help="random seed (same on every rank)")
    group.add_argument("--zero-stage", type=int, default=0, help="DeepSpeed ZeRO stage 0..3 (0 = plain DDP)")
    group.add_argument("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config", default=None,
                       help="a DeepSpeed JSON config file (optional; our flags fill the rest)")
    group.add_argument("--checkpoint-activations", action="store_true", help="recompute activations in backward")
    group.add_argument("--checkpoint-num-layers", type=int, default=1, help="layers per activation-checkpoint chunk")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the model (in place, after wrapping; docs/scaling.md)")
    group.add_argument("--compile-backend", default="inductor", help="torch.compile backend for --compile")
    group.add_argument("--compile-mode", default=None,
                       choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                       help="torch.compile mode for --compile (default: torch's)")
    group.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU only; fp32 on CPU)")
    group.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    group.add_argument("--half-weights", action="store_true",
                       help="with --bf16/--fp16: train the half-precision weights themselves (no fp32 master "
                            "weights; half the parameter memory, but updates smaller than the weight's precision "
                            "round away); default: fp32 master weights, half-precision compute under autocast")
    group.add_argument("--gradient-accumulation-steps", type=int, default=1,
                       help="micro-batches per optimizer step")
    group.add_argument("--gradient-clipping", type=float, default=1.0, help="max global grad norm; 0 disables")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    group.add_argument("--adam-beta1", type=float, default=0.9, help="AdamW beta1")
    group.add_argument("--adam-beta2", type=float, default=0.999, help="AdamW beta2")
    group.add_argument("--adam-eps", type=float, default=1e-8, help="AdamW epsilon")
    group.add_argument("--lr-decay-iters", type=int, default=None, help="schedule horizon in steps (default --train-iters)")
    group.add_argument("--lr-decay-style", default="linear", choices=["constant", "linear", "cosine", "exponential"],
                       help="shape of the decay after warmup")
    group.add_argument("--lr-decay-ratio", type=float, default=0.1, help="final lr = lr x ratio at the horizon")
    group.add_argument("--warmup", type=float, default=0.01, help="warmup length as a fraction of the horizon")
    group.add_argument("--max-skipped-iters", type=int, default=50,
                       help="stop after this many consecutive iterations skipped for NaN/Inf loss")
    group.add_argument("--log-interval", type=int, default=50, help="iterations between log lines")
    group.add_argument("--summary-dir", default="", help="TensorBoard/metrics base folder")
    group.add_argument("--save-args", action="store_true", help="write every argument to <summary-dir>/runs/<experiment>.txt (SAT)")
    group.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    group.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    group.add_argument("--wandb-project-name", default="default_project", help="wandb project")
    group.add_argument("--save", default=None, help="checkpoint root folder (run folder = <save>/<experiment>)")
    group.add_argument("--load", default=None, help="checkpoint run folder or iteration folder to load")
    group.add_argument("--load-iteration", type=int, default=None, help="iteration to load instead of 'latest'")
    group.add_argument("--save-interval", type=int, default=5000, help="iterations between checkpoints")
    group.add_argument("--save-total-limit", type=int, default=None, help="keep only the newest K checkpoints")
    group.add_argument("--async-save", action="store_true",
                       help="copy checkpoints to CPU memory and write them in the background (docs/checkpoints.md)")
    group.add_argument("--no-save-optim", action="store_true",
                       help="save weights only (SAT behaviour; resume re-warms the optimizer)")
    group.add_argument("--max-shard-size", default="5GB", help="largest model.safetensors shard, e.g. 5GB or 500MB")
    group.add_argument("--resume-dataloader", action="store_true",
                       help="accepted for SAT scripts; resume is always exact here")
    group.add_argument("--exit-interval", type=int, default=None, help="save and stop when iteration %% N == 0")
    group.add_argument("--exit-duration-in-mins", type=float, default=None,
                       help="save and stop after this many minutes of training")
    group.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                       help="set by launchers; read from LOCAL_RANK otherwise")
    add_sat_training_flags(group)
    return parser


def add_evaluation_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Validation / test flags (SAT group 'validation')."""
    group = parser.add_argument_group("validation", "validation configuration")
    group.add_argument("--eval-batch-size", type=int, default=None, help="per-process eval batch (default --batch-size)")
    group.add_argument("--eval-iters", type=int, default=100, help="batches per (non-strict) evaluation")
    group.add_argument("--eval-interval", type=int, default=None, help="iterations between evaluations (None = never)")
    group.add_argument("--strict-eval", action="store_true", help="evaluate the whole split exactly once")
    return parser


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Data flags (SAT group 'data')."""
    group = parser.add_argument_group("data", "data configuration")
    group.add_argument("--train-data", nargs="+", default=None, help="training data paths (or hf://...)")
    group.add_argument("--train-data-weights", nargs="+", type=float, default=None,
                       help="sampling weight per --train-data path")
    group.add_argument("--valid-data", nargs="*", default=None, help="validation data paths")
    group.add_argument("--test-data", nargs="*", default=None, help="test data paths")
    group.add_argument("--split", default="1000,1,1", help="train,valid,test proportions of --train-data")
    group.add_argument("--num-workers", type=int, default=1, help="DataLoader worker processes")
    group.add_argument("--block-size", type=int, default=10000, help="block size (examples) of the random split")
    group.add_argument("--prefetch-factor", type=int, default=4, help="batches prefetched per worker")
    group.add_argument("--iterable-dataset", nargs="?", const=True, default=False, type=_iterable_dataset_value,
                       help="datasets are torch IterableDatasets (SAT's optional value 'custom' is not supported)")
    group.add_argument("--group-by-length", action="store_true",
                       help="sort windows of the shuffled training stream by example length and pad each batch "
                            "to its longest (docs/data.md)")
    group.add_argument("--group-by-length-window", type=int, default=50,
                       help="global batches per length-sorted window of --group-by-length")
    add_sat_data_flags(group)
    return parser


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Every sat_accel flag group on a new parser, or added to the caller's parser."""
    if parser is None:
        parser = argparse.ArgumentParser(description="sat_accel")
    elif not isinstance(parser, argparse.ArgumentParser):
        raise ConfigError(f"get_args(parser=...) needs an argparse.ArgumentParser, got {type(parser).__name__}.")
    for add in (add_model_config_args, add_training_args, add_evaluation_args, add_data_args,
                add_tokenization_args, add_text_generate_args, add_deepspeed_launcher_args):
        add(parser)
    return parser


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules or os.path.basename(sys.argv[0] if sys.argv else "").startswith("ipykernel")


def validate_args(args: argparse.Namespace) -> list[str]:
    """Every problem with the flags, each one sentence saying what to change (empty = fine)."""
    problems = []
    if args.train_iters is not None and args.epochs is not None:
        problems.append("--train-iters and --epochs are mutually exclusive: pass only one of them.")
    if args.train_iters is not None and args.train_iters < 0:
        problems.append(f"--train-iters must be >= 0 (0 evaluates only), got {args.train_iters}.")
    if args.epochs is not None and args.epochs <= 0:
        problems.append(f"--epochs must be a positive integer, got {args.epochs}.")
    if args.fp16 and args.bf16:
        problems.append("--fp16 and --bf16 are mutually exclusive: pick one precision.")
    name = args.experiment_name
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        problems.append(f"--experiment-name {name!r} must be a name inside --save / --summary-dir (not empty, not "
                        "absolute, no '..'): e.g. --experiment-name bert-boolq.")
    if getattr(args, "half_weights", False) and not (args.fp16 or args.bf16):
        problems.append("--half-weights needs --bf16 or --fp16 (which half precision to keep the weights in).")
    if getattr(args, "half_weights", False) and (args.zero_stage > 0 or args.deepspeed_config):
        problems.append("--half-weights does not apply to DeepSpeed (its bf16/fp16 modes keep their own fp32 "
                        "master weights): drop --half-weights.")
    for flag in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_interval", "eval_iters",
                 "save_interval", "eval_interval", "exit_interval", "block_size", "save_total_limit",
                 "group_by_length_window"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag.replace('_', '-')} must be at least 1, got {value}.")
    # `not x >= 0` (rather than `x < 0`) also catches NaN
    if not args.lr >= 0:
        problems.append(f"--lr must be >= 0, got {args.lr}.")
    if not 0 <= args.warmup <= 1:
        problems.append(f"--warmup is a fraction of the schedule and must be in [0, 1], got {args.warmup}.")
    if not 0 < args.lr_decay_ratio <= 1:
        problems.append(f"--lr-decay-ratio must be in (0, 1], got {args.lr_decay_ratio}.")
    if args.num_workers < 0:
        problems.append(f"--num-workers must be >= 0, got {args.num_workers}.")
    if args.model_parallel_size != 1:
        problems.append("--model-parallel-size > 1 is not supported; use --zero-stage 3 or FSDP to shard a large model.")
    if args.wandb and importlib.util.find_spec("wandb") is None:
        problems.append("--wandb needs the wandb package, which is not installed: pip install 'sat-accel[wandb]'.")
    problems += value_problems(args)
    problems += _data_problems(args)
    problems += _deepspeed_problems(args)
    problems += refused_flag_problems(args)
    return problems


def _data_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.train_data_weights is not None:
        n_paths = len(args.train_data or [])
        if len(args.train_data_weights) != n_paths:
            problems.append(f"--train-data-weights has {len(args.train_data_weights)} values but --train-data has "
                            f"{n_paths} paths: give one weight per path.")
        if any(w < 0 for w in args.train_data_weights) or not any(w > 0 for w in args.train_data_weights):
            problems.append(f"--train-data-weights must be >= 0 with at least one > 0, got {args.train_data_weights}.")
    try:
        parse_split(args.split)
    except ConfigError as err:
        problems.append(str(err))
    return problems


def _deepspeed_problems(args: argparse.Namespace) -> list[str]:
    if args.zero_stage not in (0, 1, 2, 3):
        return [f"--zero-stage must be 0, 1, 2 or 3, got {args.zero_stage}."]
    wants_deepspeed = args.zero_stage > 0 or args.deepspeed_config is not None
    if wants_deepspeed and importlib.util.find_spec("deepspeed") is None:
        return [f"--zero-stage {args.zero_stage} needs DeepSpeed, which is not installed: "
                "pip install 'sat-accel[deepspeed]'."]
    return []


def _apply_launcher_env(args: argparse.Namespace) -> None:
    """rank / world_size / local_rank / device from torchrun / accelerate launch variables."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if args.local_rank is None else args.local_rank
    args.cuda = torch.cuda.is_available()
    record_launch_facts(args, int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank,
                        f"cuda:{local_rank}" if args.cuda else "cpu")


def record_launch_facts(args: argparse.Namespace, rank: int, world_size: int, local_rank: int, device: str) -> None:
    """The one writer of SAT's launch facts on args. get_args records them from the launcher's environment (SAT
    scripts read args.rank before any accelerator exists); training_main records them again from the Accelerator
    it built (the same values, checked by check_world_size, and args a user made by hand get them too)."""
    args.rank, args.world_size, args.local_rank, args.device = rank, world_size, local_rank, device


_last_seed = {"seed": 1234}  # what reset_random_seed(scale) multiplies (SAT keeps it in a global too)


def set_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU) with the same value on every rank."""
    _last_seed["seed"] = seed
    _seed_everything(seed)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def initialize_distributed(args: argparse.Namespace) -> bool:
    """SAT's process-group start-up. Here Accelerate starts the process group inside training_main, so this
    does nothing and returns False ("nothing was initialised now"), as SAT does when a group already exists."""
    logger.debug("initialize_distributed: the process group is started by training_main (Accelerate).")
    return False


def reset_random_seed(scale: int = 1) -> None:
    """SAT's re-seed: seed everything again with (the last --seed) x `scale`."""
    _seed_everything(_last_seed["seed"] * scale)


def update_args_with_file(args: argparse.Namespace, path: str) -> argparse.Namespace:
    """A NEW Namespace: `args` overridden by the JSON file `path` (SAT: the file wins); keys ending in
    `_path` that are relative are taken relative to the file's folder."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"update_args_with_file: cannot read {path} as JSON ({e}); pass a JSON object file.") from e
    if not isinstance(config, dict):
        raise ConfigError(f"update_args_with_file: {path} must hold a JSON object, got {type(config).__name__}.")
    config = resolve_config_paths(config, os.path.dirname(os.path.abspath(path)))
    return argparse.Namespace(**{**vars(args), **config})


def overwrite_args_by_dict(args: argparse.Namespace, overwrite_args: dict | None = None) -> argparse.Namespace:
    """Set every key of `overwrite_args` on `args` (in place, returned too); SAT's `decoder_freq` key becomes
    the per-layer `is_decoder` list."""
    for key, value in (overwrite_args or {}).items():
        if key == "decoder_freq":
            args.is_decoder = [i % value == 0 for i in range(args.num_layers)]
        else:
            setattr(args, key, value)
    return args


def _parse_from_code(parser: argparse.ArgumentParser, args_list: list[str]) -> argparse.Namespace:
    """parse_args that raises ConfigError (argparse would print usage and raise SystemExit)."""
    def raise_config_error(message: str) -> None:
        raise ConfigError(f"get_args({args_list!r}): {message}.")

    parser.error = raise_config_error  # argparse reports every parsing problem through error()
    try:
        return parser.parse_args(args_list)
    finally:
        del parser.error


def get_args(args_list: Sequence[str] | None = None,
             parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse SAT-style flags, validate them, read the launcher environment and seed everything.

    `args_list=None` parses sys.argv (except inside a notebook kernel, where it parses nothing);
    pass a list from code. From the command line a bad flag exits with code 2 and one sentence;
    from code (a list was passed) it raises ConfigError.
    """
    from_cli = args_list is None
    if from_cli and _in_notebook():
        args_list, from_cli = [], False
    parser = build_parser(parser)
    args = parser.parse_args(None) if from_cli else _parse_from_code(parser, list(args_list))
    problems = validate_args(args)
    if problems:
        if from_cli:
            parser.error(" ".join(problems))
        raise ConfigError(" ".join(problems))
    if args.train_iters is None and args.epochs is None:
        args.train_iters = DEFAULT_TRAIN_ITERS
        logger.warning("Neither --train-iters nor --epochs given: training for %d iterations.", DEFAULT_TRAIN_ITERS)
    if args.eval_batch_size is None:
        args.eval_batch_size = args.batch_size
    log_noted_flags(args)
    _apply_launcher_env(args)
    set_random_seed(args.seed)
    return args
