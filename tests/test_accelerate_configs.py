"""accelerate_configs/*.yaml: each parses with Accelerate's own loader, says what it promises, and is run by a
test where this machine allows it (CPU here): cpu/single_gpu (1 process), multi_cpu/multi_gpu (2 processes)
train like one process with the doubled batch, fsdp stops with a clear error without a GPU, and a yaml whose
precision disagrees with the flags is refused. DeepSpeed yamls run in test_deepspeed.py, multi_node.yaml in
test_multinode.py."""
import subprocess
from pathlib import Path

import pytest
import torch

from launch import assert_bitwise, assert_same_training, command, launch_env, run_tiny

CONFIGS = Path(__file__).resolve().parent.parent / "accelerate_configs"
TESTS = Path(__file__).resolve().parent
COMMON = ["--train-data", "tiny:96", "--split", "1", "--train-iters", "8", "--log-interval", "1", "--lr", "3e-3",
          "--warmup", "0.25", "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6"]
# yaml -> (distributed_type, num_processes, a deepspeed_config key it must set)
EXPECTED = {
    "cpu.yaml": ("NO", 1, None), "single_gpu.yaml": ("NO", 1, None),
    "multi_cpu.yaml": ("MULTI_GPU", 2, None), "multi_gpu.yaml": ("MULTI_GPU", 8, None),
    "multi_node.yaml": ("MULTI_GPU", 16, None), "fsdp.yaml": ("FSDP", 1, None),
    "deepspeed_zero1.yaml": ("DEEPSPEED", 2, ("zero_stage", 1)),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 2, ("zero_stage", 2)),
    "deepspeed_zero2_offload.yaml": ("DEEPSPEED", 2, ("offload_optimizer_device", "cpu")),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 2, ("zero3_save_16bit_model", True)),
}


def test_the_config_set_is_complete():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_parses_and_leaves_precision_to_the_flags(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    kind, processes, ds_key = EXPECTED[name]
    assert config.distributed_type.value == kind and config.num_processes == processes
    assert str(config.mixed_precision) == "no"          # --bf16/--fp16 decide; a yaml value would be an error
    if ds_key:
        assert config.deepspeed_config[ds_key[0]] == ds_key[1]
        assert "gradient_accumulation_steps" not in config.deepspeed_config   # the flag decides
        assert "gradient_clipping" not in config.deepspeed_config
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "TransformerLayer"
        assert config.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


def test_fsdp_wraps_a_class_that_exists():
    from sat_accel.model import transformer

    assert isinstance(getattr(transformer, "TransformerLayer"), type)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_yaml_is_run_by_some_test(name):
    sources = "".join(p.read_text() for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    sources += Path(__file__).read_text().rsplit("# ---------------- launched", 1)[1]
    assert name in sources, f"no test launches accelerate_configs/{name}"


# ---------------- launched (2 CPU cores: keep them short)
def _yaml_run(tmp_path, name, argv, launch_args=()):
    return run_tiny(tmp_path, COMMON + argv, config_file=CONFIGS / name, launch_args=launch_args)


@pytest.fixture(scope="module")
def cpu_yaml_run(tmp_path_factory):
    return _yaml_run(tmp_path_factory.mktemp("cpu"), "cpu.yaml", ["--batch-size", "8"])


@pytest.mark.multiprocess
@pytest.mark.slow
def test_single_gpu_yaml_runs_on_cpu_like_cpu_yaml(tmp_path, cpu_yaml_run):
    losses, weights, _ = _yaml_run(tmp_path, "single_gpu.yaml", ["--batch-size", "8"])
    assert losses == cpu_yaml_run[0]
    assert_bitwise(cpu_yaml_run[1], weights)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_multi_cpu_yaml_alone_gives_two_processes(tmp_path, cpu_yaml_run):
    losses, weights, proc = _yaml_run(tmp_path, "multi_cpu.yaml", ["--batch-size", "4"])
    assert_same_training(cpu_yaml_run[0], losses, cpu_yaml_run[1], weights)
    assert proc.records[0]["samples_per_s"] > 0


@pytest.mark.multiprocess
@pytest.mark.slow
def test_multi_gpu_yaml_with_process_override_on_cpu(tmp_path, cpu_yaml_run):
    losses, weights, _ = _yaml_run(tmp_path, "multi_gpu.yaml", ["--batch-size", "4"], ["--num_processes", "2"])
    assert_same_training(cpu_yaml_run[0], losses, cpu_yaml_run[1], weights)


def _failing_launch(tmp_path, name, launch_args=()):
    cmd = command(1, "python", config_file=CONFIGS / name, launch_args=launch_args)
    proc = subprocess.run(cmd + COMMON + ["--batch-size", "4", "--out", str(tmp_path)], env=launch_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and not (tmp_path / "DONE").exists()
    return proc.stdout + proc.stderr


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_fsdp_yaml_without_gpu_is_a_clear_error(tmp_path):
    assert "FSDP through Accelerate needs a GPU" in _failing_launch(tmp_path, "fsdp.yaml")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_yaml_precision_that_disagrees_with_the_flags_is_refused(tmp_path):
    output = _failing_launch(tmp_path, "cpu.yaml", ["--mixed_precision", "bf16"])
    assert "asks for mixed_precision bf16 but the flags say no" in output
