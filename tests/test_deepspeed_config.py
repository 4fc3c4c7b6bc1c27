"""Flags + config files -> one DeepSpeed config (sat_accel/training/deepspeed_config.py) and the launcher
checks in sat_accel/training/accelerator.py. Fast: nothing is launched, no process group is formed."""
import json
from types import SimpleNamespace

import pytest

from sat_accel import get_args
from sat_accel.errors import ConfigError
from sat_accel.training import accelerator as acc_mod
from sat_accel.training import deepspeed_config as dsc

LAUNCHER_VARS = ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                 "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "ACCELERATE_GRADIENT_CLIPPING",
                 "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
                 "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
                 "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_CONFIG_DS_FIELDS", "ACCELERATE_MIXED_PRECISION",
                 "ACCELERATE_USE_FSDP", "ACCELERATE_DEEPSPEED_ZERO3_INIT", "WORLD_SIZE", "LOCAL_WORLD_SIZE"]


@pytest.fixture(autouse=True)
def clean_launcher_env(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


def args_for(*flags):
    return get_args(["--batch-size", "4", *flags])


def write_json(tmp_path, config, name="ds.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def test_flags_alone_give_a_complete_config():
    config = dsc.build_config(args_for("--zero-stage", "2", "--gradient-accumulation-steps", "3",
                                       "--gradient-clipping", "0.5"), "no", world_size=2)
    assert config["zero_optimization"]["stage"] == 2
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["gradient_clipping"] == 0.5
    assert config["zero_force_ds_cpu_optimizer"] is False          # offload keeps our AdamW
    assert config["zero_optimization"]["memory_efficient_linear"] is False  # ZeRO-3 leaves F.linear alone
    assert "optimizer" not in config and "scheduler" not in config


def test_clipping_zero_is_written_explicitly():
    """DeepSpeedPlugin(gradient_clipping=0) leaves DeepSpeed's default clipping on: we write 0.0 ourselves."""
    plugin = dsc.build_plugin(args_for("--zero-stage", "1", "--gradient-clipping", "0"), has_gpu=False)
    assert plugin.deepspeed_config["gradient_clipping"] == 0.0
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 1
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 4
    assert plugin.zero3_init_flag is False


def test_zero3_gathers_weights_for_model_safetensors():
    plugin = dsc.build_plugin(args_for("--zero-stage", "3"), has_gpu=False)
    assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert plugin.zero3_save_16bit_model is True
    assert plugin.hf_ds_config.is_zero3()


def test_no_deepspeed_without_flags_or_launcher():
    assert dsc.build_plugin(args_for(), has_gpu=False) is None


def test_file_keys_pass_through_and_autos_are_filled(tmp_path):
    path = write_json(tmp_path, {"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto",
                                                       "overlap_comm": True},
                                 "gradient_accumulation_steps": "auto", "train_batch_size": 16,
                                 "zero_force_ds_cpu_optimizer": True})
    config = dsc.build_config(args_for("--deepspeed_config", path, "--gradient-accumulation-steps", "2",
                                       "--hidden-size", "64"), "no", world_size=2)
    assert config["zero_optimization"]["stage"] == 2                 # --zero-stage 0 = take the file's stage
    assert config["zero_optimization"]["overlap_comm"] is True
    assert config["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert config["gradient_accumulation_steps"] == 2
    assert config["zero_force_ds_cpu_optimizer"] is True             # a file may choose DeepSpeedCPUAdam
    assert config["train_batch_size"] == 16


@pytest.mark.parametrize("file_config, flags, message", [
    ({"gradient_accumulation_steps": 4}, [], "gradient_accumulation_steps=4 but --gradient-accumulation-steps gives 1"),
    ({"gradient_clipping": 0.1}, [], "gradient_clipping=0.1 but --gradient-clipping gives 1.0"),
    ({"train_micro_batch_size_per_gpu": 8}, [], "train_micro_batch_size_per_gpu=8 but --batch-size gives 4"),
    ({"zero_optimization": {"stage": 2}}, ["--zero-stage", "3"], "zero_optimization.stage=2 but --zero-stage gives 3"),
    ({"fp16": {"enabled": True}}, [], "fp16.enabled=True but --fp16 gives False"),
    ({"bf16": {"enabled": False}}, ["--bf16"], "bf16.enabled=False but --bf16 gives True"),
    ({"train_batch_size": 12}, [], "train_batch_size=12 but .* = 8"),
    ({"optimizer": {"type": "AdamW"}}, [], "'optimizer' section, but sat_accel builds AdamW"),
    ({"scheduler": {"type": "WarmupLR"}}, [], "'scheduler' section"),
    ({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}, [],
     "stage3_gather_16bit_weights_on_model_save=False"),
])
def test_a_file_that_disagrees_with_a_flag_is_an_error(tmp_path, file_config, flags, message):
    path = write_json(tmp_path, file_config)
    args = args_for("--deepspeed_config", path, *flags)
    with pytest.raises(ConfigError, match=message):
        dsc.build_config(args, dsc.requested_precision(args), world_size=2)


def test_every_conflict_is_reported_at_once(tmp_path):
    path = write_json(tmp_path, {"gradient_accumulation_steps": 4, "gradient_clipping": 0.1})
    with pytest.raises(ConfigError) as err:
        dsc.build_config(args_for("--deepspeed_config", path), "no")
    assert "gradient_accumulation_steps=4" in str(err.value) and "gradient_clipping=0.1" in str(err.value)


def test_same_value_or_auto_in_the_file_is_fine(tmp_path):
    path = write_json(tmp_path, {"gradient_accumulation_steps": 2, "gradient_clipping": "auto",
                                 "train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"}})
    config = dsc.build_config(args_for("--deepspeed_config", path, "--gradient-accumulation-steps", "2"), "no")
    assert config["gradient_clipping"] == 1.0 and config["train_micro_batch_size_per_gpu"] == 4


def test_invalid_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2},\n  "gradient_clipping": 1.0,\n}\n')
    with pytest.raises(ConfigError, match=r"broken\.json is not valid JSON: .* line 4"):
        dsc.build_config(args_for("--deepspeed_config", str(path)), "no")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        dsc.build_config(args_for("--deepspeed_config", str(tmp_path / "nope.json")), "no")


def test_accelerate_yaml_values_follow_the_same_rule(monkeypatch):
    """What `accelerate launch` exports from a yaml's deepspeed_config: is a config source like a file."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu")
    config = dsc.build_config(args_for(), "no")
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    with pytest.raises(ConfigError, match="the accelerate config sets gradient_accumulation_steps=4"):
        dsc.build_config(args_for(), "no")


def test_yaml_and_file_that_disagree_are_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    path = write_json(tmp_path, {"zero_optimization": {"stage": 3}})
    with pytest.raises(ConfigError,
                       match="the accelerate config sets zero_optimization.stage=2 but --deepspeed_config .* sets 3"):
        dsc.build_config(args_for("--deepspeed_config", path), "no")


def test_yaml_with_both_a_config_file_and_keys_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", write_json(tmp_path, {"zero_optimization": {"stage": 1}}))
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "deepspeed_config_file,zero_stage")
    with pytest.raises(ConfigError, match="keep only deepspeed_config_file"):
        dsc.build_config(args_for(), "no")
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "deepspeed_config_file")
    assert dsc.build_config(args_for(), "no")["zero_optimization"]["stage"] == 1


def test_deepspeed_yaml_without_deepspeed_installed(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    real_find_spec = dsc.importlib.util.find_spec
    monkeypatch.setattr(dsc.importlib.util, "find_spec",
                        lambda name: None if name == "deepspeed" else real_find_spec(name))
    with pytest.raises(ConfigError, match=r"pip install 'sat-accel\[deepspeed\]'"):
        dsc.build_plugin(args_for(), has_gpu=False)


def test_fsdp_without_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP through Accelerate needs a GPU"):
        acc_mod.check_launch_environment(args_for(), has_gpu=False)


def test_fsdp_and_deepspeed_together_are_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="pick one"):
        acc_mod.check_launch_environment(args_for("--zero-stage", "2"), has_gpu=True)


def test_launcher_precision_must_match_the_flags(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="pass --bf16"):
        acc_mod.check_launch_environment(args_for(), has_gpu=False)
    acc_mod.check_launch_environment(args_for("--bf16"), has_gpu=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")   # what `accelerate launch` always exports: flags win
    acc_mod.check_launch_environment(args_for("--bf16"), has_gpu=False)


def test_launcher_gradient_accumulation_must_match_the_flag(monkeypatch):
    """Accelerate reads ACCELERATE_GRADIENT_ACCUMULATION_STEPS over the Accelerator's argument."""
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 4 but --gradient-accumulation-steps is 1"):
        acc_mod.check_launch_environment(args_for(), has_gpu=False)


def test_more_local_processes_than_gpus(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setattr(acc_mod.torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="8 processes on this machine but only 2 GPU"):
        acc_mod.check_launch_environment(args_for(), has_gpu=True)


def test_world_size_mismatch_names_the_numbers(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="started 4 processes .* Accelerate sees 2"):
        acc_mod.check_world_size(SimpleNamespace(num_processes=2))


def test_a_precision_section_from_a_file_is_enabled_by_the_flag(tmp_path):
    """A file's fp16 loss-scale settings without 'enabled' must not leave fp16 off under --fp16."""
    path = write_json(tmp_path, {"fp16": {"loss_scale_window": 200}})
    config = dsc.build_config(args_for("--deepspeed_config", path, "--fp16"), "fp16")
    assert config["fp16"] == {"loss_scale_window": 200, "enabled": True}
    assert "bf16" not in config   # absent sections are left to Accelerate's set_mixed_precision


def test_one_visible_gpu_with_more_processes_only_warns(monkeypatch, caplog):
    """A launcher may bind one GPU per process; Accelerate would otherwise share it, so we only warn."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(acc_mod.torch.cuda, "device_count", lambda: 1)
    acc_mod.logger.addHandler(caplog.handler)   # sat_accel's logger may not propagate to the root logger
    try:
        acc_mod.check_launch_environment(args_for(), has_gpu=True)
    finally:
        acc_mod.logger.removeHandler(caplog.handler)
    assert "started 4 processes on this machine but only 1 GPU" in caplog.text
