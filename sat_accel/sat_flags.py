"""SAT flags that exist so SAT launch scripts parse unchanged, and what happens to each one here.

Every SAT 0.4.12 flag parses (docs/migrating_from_sat.md has the full table). Most work as in SAT; the
ones listed in `NOTED` are accepted and, when set to something other than SAT's default, log one line
saying what Accelerate does instead; the ones in `refused_flag_problems` ask for something sat_accel
cannot do and fail with a sentence saying what to use. Architecture flags that the built-in trunk does
not implement (`UNBUILT_ARCH_FLAGS`) are refused when a model is built, not when parsing, so a model
family that implements one of them can still read it from args.
"""
from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("sat_accel.arguments")

# flag dest -> (SAT default, what happens here instead). Logged once per get_args when the value differs.
NOTED: dict[str, tuple[object, str]] = {
    "use_gpu_initialization": (False, "Accelerate moves the built model to each process's device; "
                                      "--use-gpu-initialization changes nothing."),
    "make_vocab_size_divisible_by": (128, "SAT never applies --make-vocab-size-divisible-by either; "
                                          "pad --vocab-size yourself if you want it."),
    "parallel_output": (False, "--parallel-output only matters with tensor model parallelism, which is not "
                               "supported; logits are always whole."),
    "profiling": (-1, "--profiling (nsys ranges) is ignored; wrap training_main in torch.profiler instead."),
    "force_train": (False, "--force-train is ignored: missing non-mixin weights are always an error; load "
                           "with --mode finetune when the missing weights belong to new mixins."),
    "no_save_rng": (False, "--no-save-rng is ignored: RNG states are a few bytes and make resume exact."),
    "no_load_rng": (False, "--no-load-rng is ignored: resume restores the RNG states when the checkpoint has "
                           "them and goes on without them when it does not."),
    "distributed_backend": ("nccl", "--distributed-backend is ignored: Accelerate picks nccl on GPUs and "
                                    "gloo on CPU."),
    "iterable_dataset_eval": ("", "--iterable-dataset-eval is ignored: a validation/test dataset is read as "
                                  "iterable exactly when create_dataset_function returns an IterableDataset."),
    "device": (-1, "--device is ignored: each process uses the GPU of its local rank (choose GPUs with "
                   "CUDA_VISIBLE_DEVICES)."),
    "deepspeed": (False, "--deepspeed is implied: DeepSpeed is used when --zero-stage > 0 or "
                         "--deepspeed_config is given."),
    "deepscale": (False, "--deepscale (DeepSpeed's deprecated alias) is ignored."),
    "deepscale_config": (None, "--deepscale_config (DeepSpeed's deprecated alias) is ignored; use "
                               "--deepspeed_config."),
    "deepspeed_mpi": (False, "--deepspeed_mpi is ignored: launch with accelerate launch or torchrun."),
}

# Architecture flags with SAT's defaults; the trunk builds only the default value (see BaseModel).
UNBUILT_ARCH_FLAGS: dict[str, object] = {
    "num_multi_query_heads": 0, "is_gated_mlp": False, "is_rotary_emb": False, "drop_path": 0.0,
}


def add_sat_model_flags(group: argparse._ArgumentGroup) -> None:
    """SAT's optional architecture flags (added to the 'model' group)."""
    group.add_argument("--use-gpu-initialization", action="store_true",
                       help="SAT: build parameters on the GPU (no effect here, the model is moved after build)")
    group.add_argument("--num-multi-query-heads", type=int, default=0,
                       help="key/value heads for multi-query/grouped-query attention; 0 = one per query head")
    group.add_argument("--is-gated-mlp", action="store_true", help="gated (GLU) MLP with a third projection")
    group.add_argument("--is-rotary-emb", action="store_true", help="rotary position embeddings")
    group.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth probability per layer")
    group.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                       help="SAT: intended vocab padding (never applied, in SAT neither)")
    group.add_argument("--parallel-output", action="store_true",
                       help="SAT: keep logits split across model-parallel ranks (no effect with model parallel 1)")


def add_sat_training_flags(group: argparse._ArgumentGroup) -> None:
    """SAT's training flags that have no job here (accepted; see NOTED) plus --checkpoint-skip-layers."""
    group.add_argument("--checkpoint-skip-layers", type=int, default=0,
                       help="the last N layers are not activation-checkpointed")
    group.add_argument("--profiling", type=int, default=-1, help="SAT: iteration to start nsys profiling (ignored)")
    group.add_argument("--force-train", action="store_true",
                       help="SAT: allow missing non-mixin weights when loading for training (ignored)")
    group.add_argument("--no-save-rng", action="store_true", help="SAT: do not save RNG states (ignored)")
    group.add_argument("--no-load-rng", action="store_true", help="SAT: do not restore RNG states (ignored)")
    group.add_argument("--distributed-backend", default="nccl",
                       help="SAT: torch.distributed backend (ignored; Accelerate picks nccl on GPU, gloo on CPU)")


def add_sat_data_flags(group: argparse._ArgumentGroup) -> None:
    """SAT's webdataset-era data flags."""
    group.add_argument("--iterable-dataset-eval", default="",
                       help="SAT: whether eval data is iterable (ignored; the dataset's type decides)")
    group.add_argument("--batch-from-same-dataset", action="store_true",
                       help="SAT: every batch from one --train-data source (not supported)")


def add_tokenization_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """SAT's 'Tokenization' group: --tokenizer-type, read by get_tokenizer(args)."""
    group = parser.add_argument_group("Tokenization", "tokenization configuration")
    group.add_argument("--tokenizer-type", default="fake",
                       help="tokenizer for get_tokenizer(args): a transformers name or folder ('fake' = none)")
    return parser


def add_text_generate_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """SAT's 'Text generation' group (values for generation scripts; training ignores them)."""
    group = parser.add_argument_group("Text generation", "generation configuration")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    group.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling mass (0 = off)")
    group.add_argument("--top_k", type=int, default=0, help="top-k sampling (0 = off)")
    group.add_argument("--num-beams", type=int, default=1, help="beams for beam search")
    group.add_argument("--length-penalty", type=float, default=0.0, help="beam search length penalty")
    group.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams of this size")
    group.add_argument("--min-tgt-length", type=int, default=0, help="minimum generated length (tokens)")
    group.add_argument("--out-seq-length", type=int, default=256, help="maximum sequence length to generate (tokens)")
    group.add_argument("--input-source", default="interactive", help="'interactive' or a file of prompts")
    group.add_argument("--output-path", default="./samples", help="folder for generated samples")
    group.add_argument("--with-id", action="store_true", help="each input line starts with an id")
    group.add_argument("--max-inference-batch-size", type=int, default=12, help="largest generation batch")
    group.add_argument("--device", type=int, default=-1, help="SAT: device index, -1 = auto (ignored here)")
    return parser


def add_deepspeed_launcher_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags `deepspeed.add_config_arguments` adds in SAT (except --deepspeed_config, ours)."""
    group = parser.add_argument_group("DeepSpeed", "DeepSpeed launcher flags accepted for SAT scripts")
    group.add_argument("--deepspeed", action="store_true", help="SAT/DeepSpeed: enable DeepSpeed (implied here)")
    group.add_argument("--deepscale", action="store_true", help="DeepSpeed's deprecated alias (ignored)")
    group.add_argument("--deepscale_config", default=None, help="DeepSpeed's deprecated alias (ignored)")
    group.add_argument("--deepspeed_mpi", action="store_true", help="DeepSpeed MPI discovery (ignored)")
    return parser


def refused_flag_problems(args: argparse.Namespace) -> list[str]:
    """SAT flags asking for something sat_accel cannot do, one sentence each."""
    problems = []
    if getattr(args, "batch_from_same_dataset", False):
        problems.append("--batch-from-same-dataset is not supported; mix --train-data sources with "
                        "--train-data-weights (batches then mix sources).")
    return problems


def log_noted_flags(args: argparse.Namespace) -> None:
    """One line for each accepted-but-ignored SAT flag the user set."""
    for dest, (default, note) in NOTED.items():
        if getattr(args, dest, default) != default:
            logger.warning(note)
