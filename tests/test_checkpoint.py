"""Checkpoint save/load: layout, bit-exact round trips, tied/non-contiguous tensors, sharding, training
state, retention, failures and the errors a user sees for bad --load folders."""
import argparse
import errno
import json
import logging
import os
import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from sat_accel import checkpoint_format
from sat_accel.errors import CheckpointError, ConfigError
from sat_accel.checkpoint_format import read_weights
from sat_accel.training import checkpoint as ckpt


class Tiny(torch.nn.Module):
    """Tied embedding/decoder, a non-contiguous buffer and two buffers that are views of one storage."""

    def __init__(self, vocab=11, hidden=6):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.body = torch.nn.Linear(hidden, hidden)
        self.decoder = torch.nn.Linear(hidden, vocab, bias=False)
        self.decoder.weight = self.embed.weight
        self.register_buffer("transposed", torch.randn(4, 3).t())
        base = torch.randn(10)
        self.register_buffer("first_half", base[:5])
        self.register_buffer("second_half", base[5:])

    def forward(self, x):
        return self.decoder(torch.tanh(self.body(self.embed(x))))


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def _args(**kw):
    base = dict(no_save_optim=False, save_total_limit=None, max_shard_size="5GB", num_layers=2, hidden_size=6)
    base.update(kw)
    return argparse.Namespace(**base)


def _trained(seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_layout_and_bit_exact_round_trip(tmp_path, accelerator):
    model, opt, sched = _trained()
    extra = {"iteration": 6, "consumed": {"train": 24}, "experiment_name": "run-01"}
    folder = ckpt.save_checkpoint(accelerator, str(tmp_path), 6, model, opt, sched, extra, _args())
    assert folder == str(tmp_path / "6")
    assert (tmp_path / "latest").read_text() == "6"
    config = json.loads((tmp_path / "model_config.json").read_text())
    assert config == {"model_class": "Tiny"}  # a plain module: only what is true of it, no get_args arch values
    state_files = set(os.listdir(tmp_path / "6" / "training_state"))
    assert state_files == {"optimizer.pt", "scheduler.pt", "rng_state_0.pth", "trainer_state.json", "args.json"}
    assert json.loads((tmp_path / "6" / "training_state" / "trainer_state.json").read_text()) == extra
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]

    torch.manual_seed(99)
    fresh = Tiny()
    ckpt.load_model_weights(fresh, folder, mode="pretrain")
    _same_state(model, fresh)
    assert fresh.decoder.weight is fresh.embed.weight  # load copies into the model's own tied parameter
    stored, tied = read_weights(folder)
    assert tied == {"embed.weight": "decoder.weight"} or tied == {"decoder.weight": "embed.weight"}
    assert len(stored) == len(model.state_dict()) - 1


def test_sharded_save_round_trip(tmp_path, accelerator):
    model, opt, sched = _trained()
    ckpt.save_checkpoint(accelerator, str(tmp_path), 3, model, opt, sched, {}, _args(max_shard_size="200B"))
    files = os.listdir(tmp_path / "3")
    index = json.loads((tmp_path / "3" / "model.safetensors.index.json").read_text())
    shards = sorted(f for f in files if f.startswith("model-"))
    assert len(shards) >= 3 and "model.safetensors" not in files
    assert set(index["weight_map"].values()) == set(shards)
    fresh = Tiny()
    ckpt.load_model_weights(fresh, str(tmp_path / "3"), mode="pretrain")
    _same_state(model, fresh)


@pytest.mark.parametrize("text,expected", [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("1GiB", 2**30), (1024, 1024)])
def test_parse_size(text, expected):
    assert ckpt.parse_size(text) == expected


def test_parse_size_rejects_garbage():
    with pytest.raises(ConfigError, match="max-shard-size 'lots'"):
        ckpt.parse_size("lots")


def test_training_state_restores_optimizer_scheduler_and_rng(tmp_path, accelerator):
    model, opt, sched = _trained()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.save_checkpoint(accelerator, str(tmp_path), 1, model, opt, sched, {"iteration": 1}, _args())
    after_save = (random.random(), np.random.rand(), torch.rand(3))

    model2, opt2, sched2 = _trained(seed=5)
    opt2.param_groups[0]["lr"] = 123.0
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    extra = ckpt.load_training_state(accelerator, str(tmp_path / "1"), opt2, sched2)
    assert extra == {"iteration": 1}
    assert (random.random(), np.random.rand()) == after_save[:2]
    assert torch.equal(torch.rand(3), after_save[2])
    assert sched2.state_dict() == sched.state_dict()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for p, q in zip(opt.param_groups[0]["params"], opt2.param_groups[0]["params"]):
        assert torch.equal(opt.state[p]["exp_avg"], opt2.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], opt2.state[q]["exp_avg_sq"])


def test_weights_only_checkpoint_logs_absent_optimizer(tmp_path, accelerator, sat_log):
    model, opt, sched = _trained()
    ckpt.save_checkpoint(accelerator, str(tmp_path), 2, model, opt, sched, {}, _args(no_save_optim=True))
    assert not (tmp_path / "2" / "training_state").exists()
    with sat_log.at_level(logging.WARNING):
        assert ckpt.load_training_state(accelerator, str(tmp_path / "2"), opt, sched) is None
    assert "optimizer state is absent" in sat_log.text


def test_optimizer_state_for_other_parameters_is_a_clear_error(tmp_path, accelerator):
    model, opt, sched = _trained()
    ckpt.save_checkpoint(accelerator, str(tmp_path), 2, model, opt, sched, {}, _args())
    other = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    with pytest.raises(CheckpointError, match="optimizer.pt does not fit"):
        ckpt.load_training_state(accelerator, str(tmp_path / "2"), other, None)


def test_retention_keeps_exactly_k(tmp_path, accelerator):
    model, opt, sched = _trained()
    for it in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(accelerator, str(tmp_path), it, model, opt, sched, {}, _args(save_total_limit=2))
    assert sorted(n for n in os.listdir(tmp_path) if n.isdigit()) == ["4", "5"]
    assert (tmp_path / "latest").read_text() == "5"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_resaving_an_iteration_replaces_it(tmp_path, accelerator):
    model, opt, sched = _trained()
    ckpt.save_checkpoint(accelerator, str(tmp_path), 4, model, opt, sched, {"v": 1}, _args())
    ckpt.save_checkpoint(accelerator, str(tmp_path), 4, model, opt, sched, {"v": 2}, _args())
    assert json.loads((tmp_path / "4" / "training_state" / "trainer_state.json").read_text()) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["4", "latest", "model_config.json"]


@pytest.mark.parametrize("where,code", [("save_file", errno.ENOSPC), ("makedirs", errno.EROFS)])
def test_full_or_read_only_disk_keeps_previous_checkpoint(tmp_path, accelerator, monkeypatch, where, code):
    model, opt, sched = _trained()
    ckpt.save_checkpoint(accelerator, str(tmp_path), 1, model, opt, sched, {}, _args())

    def fail(*a, **k):
        raise OSError(code, os.strerror(code), str(tmp_path))

    monkeypatch.setattr(checkpoint_format, "save_file", fail) if where == "save_file" else monkeypatch.setattr(ckpt.os, "makedirs", fail)
    with pytest.raises(CheckpointError, match=f"checkpoint 2 .* failed .*{os.strerror(code)}.*previous checkpoint"):
        ckpt.save_checkpoint(accelerator, str(tmp_path), 2, model, opt, sched, {}, _args())
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["1", "latest", "model_config.json"]
    fresh = Tiny()
    ckpt.load_model_weights(fresh, ckpt.resolve_load_dir(str(tmp_path))[0], mode="pretrain")
    _same_state(model, fresh)


# ---------------------------------------------------------------- resolve_load_dir and bad input
@pytest.fixture
def run_dir(tmp_path, accelerator):
    model, opt, sched = _trained()
    for it in (6, 12):
        ckpt.save_checkpoint(accelerator, str(tmp_path), it, model, opt, sched, {}, _args(no_save_optim=True))
    return tmp_path


def test_resolve_load_dir_forms(run_dir):
    assert ckpt.resolve_load_dir(str(run_dir)) == (str(run_dir / "12"), 12)
    assert ckpt.resolve_load_dir(str(run_dir), 6) == (str(run_dir / "6"), 6)
    assert ckpt.resolve_load_dir(str(run_dir / "6")) == (str(run_dir / "6"), 6)
    with pytest.raises(CheckpointError, match="conflicts"):
        ckpt.resolve_load_dir(str(run_dir / "6"), 12)


def test_resolve_load_dir_errors(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.resolve_load_dir(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="available iterations: 6, 12"):
        ckpt.resolve_load_dir(str(run_dir), 7)
    (run_dir / "latest").write_text("18")
    with pytest.raises(CheckpointError, match="Iteration 18 .* missing"):
        ckpt.resolve_load_dir(str(run_dir))
    (run_dir / "latest").write_text("soon")
    with pytest.raises(CheckpointError, match="contains 'soon'"):
        ckpt.resolve_load_dir(str(run_dir))
    (run_dir / "latest").unlink()
    with pytest.raises(CheckpointError, match="has no `latest` file"):
        ckpt.resolve_load_dir(str(run_dir))


def test_truncated_safetensors_names_the_file(run_dir):
    path = run_dir / "12" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{path} is truncated or corrupt"):
        ckpt.load_model_weights(Tiny(), str(run_dir / "12"), mode="pretrain")


def test_other_architecture_names_keys_and_shapes(run_dir):
    with pytest.raises(CheckpointError, match=r"embed.weight: checkpoint \(11, 6\) vs model \(13, 6\)"):
        ckpt.load_model_weights(Tiny(vocab=13), str(run_dir / "12"), mode="pretrain")


class WithMixin(Tiny):
    def __init__(self):
        super().__init__()
        self.mixins = torch.nn.ModuleDict({"head": torch.nn.Linear(6, 2)})
        self.reinit_calls = []
        self.mixins["head"].reinit = lambda parent: self.reinit_calls.append(parent)


def test_missing_mixin_keys_reinit_in_finetune_only(run_dir):
    model = WithMixin()
    head = model.mixins["head"].weight.detach().clone()
    ckpt.load_model_weights(model, str(run_dir / "12"), mode="finetune")
    assert model.reinit_calls == [model] and torch.equal(model.mixins["head"].weight, head)
    for mode in ("pretrain", "inference"):
        with pytest.raises(CheckpointError, match=r"lacks 2 weights .*mixins.head.weight"):
            ckpt.load_model_weights(WithMixin(), str(run_dir / "12"), mode=mode)


def test_missing_non_mixin_keys_are_errors_even_in_finetune(run_dir, tmp_path, accelerator):
    class Bigger(Tiny):
        def __init__(self):
            super().__init__()
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match="extra.weight"):
        ckpt.load_model_weights(Bigger(), str(run_dir / "12"), mode="finetune")


def test_unexpected_keys_warn_and_inference_sets_eval(run_dir, sat_log):
    class Smaller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(6, 6)

    model = Smaller()
    with sat_log.at_level(logging.WARNING):
        ckpt.load_model_weights(model, str(run_dir / "12"), mode="inference")
    assert "embed.weight" in sat_log.text and "does not have" in sat_log.text
    assert not model.training
