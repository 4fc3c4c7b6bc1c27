"""The SAT flag set is a compatibility contract: a change here must be made on purpose."""
from sat_accel.arguments import build_parser

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
    "--block-size": (10000, "int"), "--prefetch-factor": (4, "int"), "--iterable-dataset": (False, "bool"),
    "--group-by-length": (False, "bool"), "--group-by-length-window": (50, "int"),
    "--num-layers": (6, "int"), "--hidden-size": (1024, "int"), "--num-attention-heads": (16, "int"),
    "--vocab-size": (100, "int"), "--max-sequence-length": (512, "int"), "--layernorm-order": ("pre", "str"),
    "--inner-hidden-size": (None, "int"), "--hidden-dropout": (0.1, "float"), "--attention-dropout": (0.1, "float"),
    "--layernorm-epsilon": (1e-5, "float"), "--skip-init": (False, "bool"),
}


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
