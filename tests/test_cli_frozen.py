"""The SAT flag set is a compatibility contract: a change here must be made on purpose."""
import logging

import pytest

from sat_accel import get_args
from sat_accel.arguments import build_parser
from sat_accel.errors import ConfigError
from sat_accel.sat_flags import NOTED

FROZEN = {
    # flag: (default, type name)
    "--experiment-name": ("MyModel", "str"), "--train-iters": (None, "int"), "--epochs": (None, "int"),
    "--batch-size": (4, "int"), "--lr": (1e-4, "float"), "--mode": ("pretrain", "str"), "--seed": (1234, "int"),
    "--zero-stage": (0, "int"), "--checkpoint-activations": (False, "bool"), "--checkpoint-num-layers": (1, "int"),
    "--fp16": (False, "bool"), "--bf16": (False, "bool"), "--gradient-accumulation-steps": (1, "int"),
    "--log-interval": (50, "int"), "--summary-dir": ("", "str"), "--save-args": (False, "bool"),
    "--lr-decay-iters": (None, "int"), "--lr-decay-style": ("linear", "str"), "--lr-decay-ratio": (0.1, "float"),
    "--warmup": (0.01, "float"), "--weight-decay": (0.01, "float"), "--save": (None, "str"), "--load": (None, "str"),
    "--save-interval": (5000, "int"), "--exit-interval": (None, "int"), "--wandb": (False, "bool"),
    "--wandb-project-name": ("default_project", "str"), "--resume-dataloader": (False, "bool"),
    "--gradient-clipping": (1.0, "float"), "--save-total-limit": (None, "int"), "--no-save-optim": (False, "bool"),
    "--exit-duration-in-mins": (None, "float"), "--adam-beta1": (0.9, "float"), "--adam-beta2": (0.999, "float"),
    "--adam-eps": (1e-8, "float"), "--no-progress": (False, "bool"), "--max-skipped-iters": (50, "int"),
    "--load-iteration": (None, "int"), "--max-shard-size": ("5GB", "str"),
    "--eval-batch-size": (None, "int"), "--eval-iters": (100, "int"), "--eval-interval": (None, "int"),
    "--strict-eval": (False, "bool"),
    "--train-data": (None, "str"), "--train-data-weights": (None, "float"), "--valid-data": (None, "str"),
    "--test-data": (None, "str"), "--split": ("1000,1,1", "str"), "--num-workers": (1, "int"),
    "--block-size": (10000, "int"), "--prefetch-factor": (4, "int"),
    "--iterable-dataset": (False, "_iterable_dataset_value"),  # bare flag = True; SAT's 'custom' is refused
    "--group-by-length": (False, "bool"),
    "--compile": (False, "bool"), "--async-save": (False, "bool"), "--compile-backend": ("inductor", "str"), "--compile-mode": (None, "str"), "--group-by-length-window": (50, "int"),
    "--num-layers": (6, "int"), "--hidden-size": (1024, "int"), "--num-attention-heads": (16, "int"),
    "--vocab-size": (100, "int"), "--max-sequence-length": (512, "int"), "--layernorm-order": ("pre", "str"),
    "--inner-hidden-size": (None, "int"), "--hidden-dropout": (0.1, "float"), "--attention-dropout": (0.1, "float"),
    "--layernorm-epsilon": (1e-5, "float"), "--skip-init": (False, "bool"),
    # SAT flags added for unchanged SAT launch scripts (issue 12); see docs/migrating_from_sat.md
    "--hidden-size-per-attention-head": (None, "int"), "--model-parallel-size": (1, "int"),
    "--use-gpu-initialization": (False, "bool"), "--num-multi-query-heads": (0, "int"),
    "--is-gated-mlp": (False, "bool"), "--is-rotary-emb": (False, "bool"), "--drop-path": (0.0, "float"),
    "--make-vocab-size-divisible-by": (128, "int"), "--parallel-output": (False, "bool"),
    "--checkpoint-skip-layers": (0, "int"), "--profiling": (-1, "int"), "--force-train": (False, "bool"),
    "--no-save-rng": (False, "bool"), "--no-load-rng": (False, "bool"), "--distributed-backend": ("nccl", "str"),
    "--local_rank": (None, "int"), "--iterable-dataset-eval": ("", "str"),
    "--batch-from-same-dataset": (False, "bool"), "--tokenizer-type": ("fake", "str"),
    "--temperature": (1.0, "float"), "--top_p": (0.0, "float"), "--top_k": (0, "int"), "--num-beams": (1, "int"),
    "--length-penalty": (0.0, "float"), "--no-repeat-ngram-size": (0, "int"), "--min-tgt-length": (0, "int"),
    "--out-seq-length": (256, "int"), "--input-source": ("interactive", "str"), "--output-path": ("./samples", "str"),
    "--with-id": (False, "bool"), "--max-inference-batch-size": (12, "int"), "--device": (-1, "int"),
    "--deepspeed": (False, "bool"), "--deepspeed_config": (None, "str"), "--deepscale": (False, "bool"),
    "--deepscale_config": (None, "str"), "--deepspeed_mpi": (False, "bool"),
}

# Every flag of SAT 0.4.12's get_args (84) plus DeepSpeed's 5, with a value a SAT launch script passes.
# Status: "works", "noted" (accepted, one logged line says what happens instead), "refused" (ConfigError from
# get_args) or "refused at build" (parses; building a model whose trunk lacks the feature is a ConfigError).
SAT_FLAGS = {
    "--num-layers": ("2", "works"), "--hidden-size": ("64", "works"), "--num-attention-heads": ("4", "works"),
    "--vocab-size": ("1000", "works"), "--max-sequence-length": ("128", "works"),
    "--layernorm-order": ("post", "works"), "--inner-hidden-size": ("128", "works"),
    "--hidden-size-per-attention-head": ("16", "works"), "--model-parallel-size": ("2", "refused"),
    "--skip-init": (None, "works"), "--use-gpu-initialization": (None, "noted"),
    "--num-multi-query-heads": ("2", "works"), "--is-gated-mlp": (None, "works"), "--is-rotary-emb": (None, "works"),
    "--layernorm-epsilon": ("1e-12", "works"), "--hidden-dropout": ("0.0", "works"),
    "--attention-dropout": ("0.0", "works"), "--drop-path": ("0.1", "refused at build"),
    "--make-vocab-size-divisible-by": ("64", "noted"), "--parallel-output": (None, "noted"),
    "--experiment-name": ("x", "works"), "--train-iters": ("10", "works"), "--batch-size": ("2", "works"),
    "--lr": ("2e-5", "works"), "--mode": ("finetune", "works"), "--seed": ("3", "works"),
    "--zero-stage": ("0", "works"), "--checkpoint-activations": (None, "works"),
    "--checkpoint-num-layers": ("2", "works"), "--checkpoint-skip-layers": ("1", "works"),
    "--fp16": (None, "works"), "--bf16": (None, "works"), "--gradient-accumulation-steps": ("2", "works"),
    "--profiling": ("5", "noted"), "--epochs": ("1", "works"), "--log-interval": ("5", "works"),
    "--summary-dir": ("runs", "works"), "--save-args": (None, "works"), "--lr-decay-iters": ("5", "works"),
    "--lr-decay-style": ("cosine", "works"), "--lr-decay-ratio": ("0.2", "works"), "--warmup": ("0.02", "works"),
    "--weight-decay": ("0.0", "works"), "--save": ("ckpt", "works"), "--load": ("ckpt", "works"),
    "--force-train": (None, "noted"), "--save-interval": ("5", "works"), "--no-save-rng": (None, "noted"),
    "--no-load-rng": (None, "noted"), "--resume-dataloader": (None, "works"),
    "--distributed-backend": ("gloo", "noted"), "--local_rank": ("0", "works"), "--exit-interval": ("5", "works"),
    "--wandb": (None, "works"), "--wandb-project-name": ("p", "works"),
    "--eval-batch-size": ("2", "works"), "--eval-iters": ("5", "works"), "--eval-interval": ("5", "works"),
    "--strict-eval": (None, "works"),
    "--train-data": ("a.jsonl", "works"), "--train-data-weights": ("1", "works"),
    "--iterable-dataset": (None, "works"), "--iterable-dataset-eval": ("True", "noted"),
    "--batch-from-same-dataset": (None, "refused"), "--valid-data": ("b.jsonl", "works"),
    "--test-data": ("c.jsonl", "works"), "--split": ("98,1,1", "works"), "--num-workers": ("0", "works"),
    "--block-size": ("100", "works"), "--prefetch-factor": ("2", "works"),
    "--tokenizer-type": ("bert-base-uncased", "works"),
    "--temperature": ("0.9", "works"), "--top_p": ("0.9", "works"), "--top_k": ("5", "works"),
    "--num-beams": ("2", "works"), "--length-penalty": ("1.0", "works"), "--no-repeat-ngram-size": ("3", "works"),
    "--min-tgt-length": ("2", "works"), "--out-seq-length": ("64", "works"), "--input-source": ("in.txt", "works"),
    "--output-path": ("out", "works"), "--with-id": (None, "works"), "--max-inference-batch-size": ("4", "works"),
    "--device": ("0", "noted"),
    "--deepspeed": (None, "noted"), "--deepspeed_config": ("ds.json", "works"), "--deepscale": (None, "noted"),
    "--deepscale_config": ("ds.json", "noted"), "--deepspeed_mpi": (None, "noted"),
}
# Flags whose value must go with others to be valid on its own.
_COMPANIONS = {"--train-data-weights": ["--train-data", "a.jsonl"]}


def _actions():
    parser = build_parser()
    return {opt: action for action in parser._actions for opt in action.option_strings}


def test_every_frozen_flag_exists_with_its_default_and_type():
    actions = _actions()
    for flag, (default, type_name) in FROZEN.items():
        assert flag in actions, f"{flag} disappeared"
        action = actions[flag]
        assert action.default == default, f"{flag} default changed to {action.default!r}"
        actual = "bool" if action.nargs == 0 else (action.type or str).__name__
        assert actual == type_name, f"{flag} type changed to {actual}"


def test_every_flag_has_help():
    for flag, action in _actions().items():
        if flag not in ("-h", "--help"):
            assert action.help, f"{flag} has no help text"


def test_sat_flag_table_is_complete():
    assert len(SAT_FLAGS) == 89  # 84 of SAT's get_args + 5 of deepspeed.add_config_arguments
    assert set(SAT_FLAGS) <= set(_actions()), sorted(set(SAT_FLAGS) - set(_actions()))
    assert {k for k, (_, status) in SAT_FLAGS.items() if status == "noted"} == {
        f"--{d.replace('_', '-')}" if d not in ("local_rank", "deepspeed_mpi", "deepscale_config") else f"--{d}"
        for d in NOTED}


@pytest.mark.parametrize("flag", sorted(SAT_FLAGS))
def test_every_sat_flag_parses_and_does_what_the_table_says(flag, sat_log, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if flag in ("--deepspeed_config", "--wandb"):
        pytest.importorskip(flag.strip("-").split("_")[0])  # without the package it is a clear ConfigError
    value, status = SAT_FLAGS[flag]
    argv = [flag] + ([value] if value is not None else []) + _COMPANIONS.get(flag, [])
    with sat_log.at_level(logging.WARNING, logger="sat_accel.arguments"):
        if status == "refused":
            with pytest.raises(ConfigError, match=flag.replace("--", "-*")):
                get_args(argv + ["--train-iters", "1"])
            return
        args = get_args(argv if flag in ("--epochs", "--train-iters") else argv + ["--train-iters", "1"])
    noted = [r.getMessage() for r in sat_log.records if flag in r.getMessage()]
    assert bool(noted) == (status == "noted"), noted
    dest = flag.lstrip("-").replace("-", "_")
    assert hasattr(args, dest)
    if status == "refused at build":
        from sat_accel.model import BaseModel
        with pytest.raises(ConfigError, match=flag):
            BaseModel(BaseModel.get_args(num_layers=1, hidden_size=8, num_attention_heads=2, **{dest: getattr(args, dest)}))


def test_migration_guide_lists_every_sat_flag_with_its_status():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "migrating_from_sat.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(--[\w-]+)` \| [^|]* \| (\w+) \|", text, re.M))
    assert rows == {flag: status.split()[0] for flag, (_, status) in SAT_FLAGS.items()}


def test_iterable_dataset_bare_flag_and_sats_custom_value():
    assert get_args(["--iterable-dataset", "--train-iters", "1"]).iterable_dataset is True
    assert get_args(["--train-iters", "1"]).iterable_dataset is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--iterable-dataset", "custom"])
