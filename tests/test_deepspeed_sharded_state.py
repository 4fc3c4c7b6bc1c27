"""sat_accel/training/sharded_state.py without processes: which runs count as sharded, what a checkpoint
from another engine says, and that plain runs get their module back untouched. The collective paths
(DeepSpeed save/load, ZeRO-3 gathering) run in test_deepspeed.py."""
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from sat_accel.errors import CheckpointError
from sat_accel.training import sharded_state


def fake_accelerator(kind: DistributedType):
    return SimpleNamespace(distributed_type=kind, unwrap_model=lambda m: getattr(m, "module", m),
                           deepspeed_engine_wrapped=None)


@pytest.mark.parametrize("kind, sharded", [(DistributedType.NO, False), (DistributedType.MULTI_GPU, False),
                                           (DistributedType.MULTI_CPU, False), (DistributedType.DEEPSPEED, True),
                                           (DistributedType.FSDP, True)])
def test_which_runs_save_a_sharded_state(kind, sharded):
    assert sharded_state.is_sharded(fake_accelerator(kind)) is sharded


def test_a_deepspeed_state_loaded_by_a_ddp_run_says_what_to_do(tmp_path):
    (tmp_path / "deepspeed").mkdir()
    assert sharded_state.has_sharded_state(str(tmp_path))
    with pytest.raises(CheckpointError, match="holds a deepspeed training state but this run uses MULTI_GPU"):
        sharded_state.load_sharded_state(fake_accelerator(DistributedType.MULTI_GPU), None, None, str(tmp_path))


def test_plain_state_folder_is_not_sharded(tmp_path):
    (tmp_path / "optimizer.pt").write_bytes(b"")
    assert not sharded_state.has_sharded_state(str(tmp_path))


def test_saving_a_sharded_state_for_ddp_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="No sharded training state for distributed type MULTI_GPU"):
        sharded_state.save_sharded_state(fake_accelerator(DistributedType.MULTI_GPU), None, None, str(tmp_path))


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.DEEPSPEED])
def test_unpartitioned_models_come_back_as_they_are(kind):
    module = torch.nn.Linear(2, 2)
    wrapped = SimpleNamespace(module=module)   # DDP-like wrapper; no ZeRO-3 engine anywhere
    assert sharded_state.unwrapped_full_model(fake_accelerator(kind), wrapped) is module
