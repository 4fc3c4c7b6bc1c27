"""Real multi-process CPU runs (gloo) under torchrun and accelerate launch, and the equivalences of docs/scaling.md.

--adam-eps 1e-6: parameters whose true gradient is zero (attention key biases) receive only rounding
noise (~1e-9), which Adam with eps 1e-8 turns into lr-sized steps that differ between configurations;
eps 1e-6 keeps that noise small so the per-tensor relative L2 check means something.
"""
import pytest

from launch import assert_bitwise, assert_same_training, run_tiny

COMMON = ["--train-data", "tiny:96", "--split", "1", "--train-iters", "8", "--log-interval", "1", "--lr", "3e-3",
          "--warmup", "0.25", "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6"]

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def one_process_batch_8(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("p1"), COMMON + ["--batch-size", "8"])


def test_two_processes_equal_one_process_double_batch_torchrun(tmp_path, one_process_batch_8):
    losses, weights, _ = run_tiny(tmp_path, COMMON + ["--batch-size", "4"], nproc=2, launcher="torchrun")
    assert_same_training(one_process_batch_8[0], losses, one_process_batch_8[1], weights)


def test_two_processes_under_accelerate_launch(tmp_path, one_process_batch_8):
    losses, weights, proc = run_tiny(tmp_path, COMMON + ["--batch-size", "4"], nproc=2, launcher="accelerate")
    assert_same_training(one_process_batch_8[0], losses, one_process_batch_8[1], weights)


def test_gradient_accumulation_equals_bigger_batch(tmp_path, one_process_batch_8):
    losses, weights, _ = run_tiny(tmp_path, COMMON + ["--batch-size", "2", "--gradient-accumulation-steps", "4"])
    assert_same_training(one_process_batch_8[0], losses, one_process_batch_8[1], weights)


def test_repeat_is_bitwise_identical(tmp_path, one_process_batch_8):
    _, weights, _ = run_tiny(tmp_path, COMMON + ["--batch-size", "8"])
    assert_bitwise(one_process_batch_8[1], weights)


def test_two_processes_with_accumulation_and_strict_eval(tmp_path, one_process_batch_8):
    argv = COMMON + ["--batch-size", "2", "--gradient-accumulation-steps", "2", "--valid-data", "valid:13",
                     "--eval-interval", "4", "--strict-eval", "--eval-batch-size", "4"]
    losses, weights, proc = run_tiny(tmp_path, argv, nproc=2, launcher="torchrun")
    assert_same_training(one_process_batch_8[0], losses, one_process_batch_8[1], weights)
    valid = [r for r in proc.records if r["split"] == "valid"]
    assert [r["iteration"] for r in valid] == [4, 8]
    assert all(r["n_examples"] == 13 for r in valid)   # 13 examples, 2 ranks x 4: ragged tail counted once
