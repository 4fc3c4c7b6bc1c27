"""sat_accel's FSDP code on 2 CPU processes, through Accelerate's real FSDP2 preparation (fully_shard, DTensor
optimizer state, torch.distributed.checkpoint) with only the distributed-type choice forced
(tests/scripts/fsdp_on_cpu.py says why): same training as DDP, sharded optimizer under training_state/,
consolidated model.safetensors, bitwise resume, and training_main returning a plain module with full weights.
The unforced path runs on a GPU in scripts/gpu_check.sh (figures in bench/RESULTS.md)."""
import glob
from pathlib import Path

import pytest
import torch

from launch import assert_bitwise, assert_same_training, run_tiny
from test_deepspeed import COMMON, SAT_MODEL, saved

ROOT = Path(__file__).resolve().parent.parent
FORCED_FSDP = ROOT / "tests" / "scripts" / "fsdp_on_cpu.py"
ARGV = COMMON + SAT_MODEL + ["--batch-size", "4", "--save-interval", "4"]

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def train(out: Path, extra=(), script=FORCED_FSDP):
    return run_tiny(out, ARGV + ["--save", str(out / "ckpt"), *extra], nproc=2, launcher="torchrun",
                    script=script)


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    return (*train(out), out)


def test_fsdp_trains_like_ddp(tmp_path, fsdp):
    ddp_losses, _, _ = train(tmp_path, script=ROOT / "tests" / "test_deepspeed.py")
    losses, _, _, out = fsdp
    assert_same_training(ddp_losses, losses, saved(tmp_path), saved(out))


def test_fsdp_checkpoint_has_sharded_optimizer_and_full_weights(fsdp):
    _, _, _, out = fsdp
    (state,) = glob.glob(str(out / "ckpt" / "run-*" / "8" / "training_state"))
    shards = sorted(Path(p).name for p in glob.glob(f"{state}/fsdp_optimizer/*/*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # one file per rank: the optimizer really is sharded
    assert not Path(state, "optimizer.pt").exists()
    weights = saved(out)
    assert weights and all(t.numel() > 0 for t in weights.values())
    assert weights["transformer.word_embeddings.weight"].shape == (8, 32)  # whole, not a rank's half


def test_fsdp_returned_model_is_plain_with_the_checkpointed_weights(fsdp):
    _, final, _, out = fsdp  # final.safetensors: training_main's returned module, saved by rank 0
    assert_bitwise(saved(out), final)


def test_fsdp_resume_is_exact(tmp_path, fsdp):
    losses, final, _, out = fsdp
    (run_dir,) = glob.glob(str(out / "ckpt" / "run-*"))
    resumed, resumed_final, _ = train(tmp_path, ["--load", run_dir, "--load-iteration", "4"])
    assert sorted(resumed) == [5, 6, 7, 8]
    assert all(resumed[i] == losses[i] for i in resumed)
    assert_bitwise(final, resumed_final)


def test_meta_skeleton_costs_no_memory_and_keeps_ties():
    from sat_accel.training.sharded_state import meta_skeleton

    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5))
    model[1].weight = model[0].weight  # tied, as an LM head and its embedding
    skeleton = meta_skeleton(model)
    assert all(t.is_meta for t in [*skeleton.parameters(), *skeleton.buffers()])
    assert skeleton[1].weight is skeleton[0].weight
    assert not model[0].weight.is_meta and isinstance(skeleton[0].weight, torch.nn.Parameter)
